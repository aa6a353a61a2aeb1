"""``python -m transfer`` runs the command line."""

from transfer.cli import main

main()
