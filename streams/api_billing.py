"""Billing endpoints on the gateway: claims export and per-patient progress."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
