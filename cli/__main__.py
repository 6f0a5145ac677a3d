"""`python -m cli`: the `flywheel` command without its console script."""

from cli import main

main()
