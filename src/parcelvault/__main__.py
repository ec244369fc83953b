from parcelvault.entrypoints.cli import main

main()
