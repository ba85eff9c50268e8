"""``python -m eagle.ge_data``: see ``eagle.ge_data.main``."""

from eagle.ge_data.main import main

if __name__ == "__main__":
    raise SystemExit(main())
