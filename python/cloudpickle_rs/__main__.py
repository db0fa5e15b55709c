"""``python -m cloudpickle_rs inspect|deps FILE``: see cloudpickle_rs._cli."""
import sys

from cloudpickle_rs._cli import main

if __name__ == "__main__":
    sys.exit(main())
