import sys

from mfspark.cli import main

if __name__ == "__main__":
    sys.exit(main(["baseline", *sys.argv[1:]]))
