import sys

from mfspark.commands.main import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
