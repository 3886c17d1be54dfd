from fade.cli import main

main()
