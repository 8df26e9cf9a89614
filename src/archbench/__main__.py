from archbench.cli import main

raise SystemExit(main())
