"""``python -m rtm.cli``: how the dev stack, the bench and the restarter start the gateway
and worker processes."""

from rtm.cli import main

if __name__ == "__main__":
    main()
