"""``python -m marsdust`` runs the command line."""

from marsdust.cli import main

if __name__ == "__main__":
    main()
