"""Embed the training data and split it into N balanced semantic clusters (not built yet: issue #5)."""
import sys

from run_config.stub import stub_stage

build_parser, main = stub_stage("cluster", "Embed the training data and split it into N balanced semantic clusters", issue=5)

if __name__ == "__main__":
    sys.exit(main())
