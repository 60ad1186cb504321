import sys

from mfspark.cli import main

if __name__ == "__main__":
    sys.exit(main(["compare-mllib", *sys.argv[1:]]))
