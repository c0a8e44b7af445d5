# The rtm-stream image: `rtm api`, `rtm worker`, `rtm db migrate` (see docker-compose.yml).
# faust-streaming ships only an sdist with Cython extensions, so wheels are built in a stage
# that has a compiler and installed into a slim runtime stage.
FROM python:3.11-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RTM_STATE_DIR=/var/lib/rtm/state
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels rtm-stream \
 && rm -rf /wheels \
 && useradd --system --uid 10001 --home-dir /var/lib/rtm --create-home rtm
# Faust keeps its data folder (rtm-worker-data) in the working directory.
WORKDIR /var/lib/rtm
USER rtm
EXPOSE 8080 6066
CMD ["rtm", "--help"]
