from tri24es.cli.app import main

main()
