import sys

from tunesmith.cli import main

if __name__ == "__main__":  # not when the engine process (spawn) imports this module again
    sys.exit(main())
