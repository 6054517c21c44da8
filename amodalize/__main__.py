from amodalize.cli import main

main()
