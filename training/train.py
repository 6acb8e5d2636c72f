"""Finetune a causal LM (or one expert per cluster) for definition modeling (not built yet: issue #6)."""
import sys

from run_config.stub import stub_stage

build_parser, main = stub_stage("train", "Finetune a causal LM (or one expert per cluster) for definition modeling", issue=6)

if __name__ == "__main__":
    sys.exit(main())
