import os

try:  # a Ctrl-C before tri24es.cli.main holds it: see there
    from tri24es.cli import interrupted, main
except KeyboardInterrupt:
    os._exit(130)

try:
    main()
except KeyboardInterrupt:
    interrupted()
