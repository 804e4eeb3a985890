"""``python -m service``: serve with settings from the environment (``NSP_*``)."""

from service.server import serve
from service.settings import Settings


def main() -> None:
    serve(Settings())


if __name__ == "__main__":
    main()
