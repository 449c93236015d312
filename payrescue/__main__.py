from payrescue.cli import main

raise SystemExit(main())
