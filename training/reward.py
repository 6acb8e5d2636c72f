"""Train the outcome reward model for Best-of-N selection (not built yet: issue #8)."""
import sys

from run_config.stub import stub_stage

build_parser, main = stub_stage("train-reward", "Train the outcome reward model for Best-of-N selection", issue=8)

if __name__ == "__main__":
    sys.exit(main())
