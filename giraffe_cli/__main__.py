from giraffe_cli.app import main

main()
