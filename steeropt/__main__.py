from steeropt.cli import main

main()
