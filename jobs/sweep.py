import sys

from mfspark.commands.main import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
