"""Finetune only the router of a merged MoE (not built yet: issue #7)."""
import sys

from run_config.stub import stub_stage

build_parser, main = stub_stage("finetune-router", "Finetune only the router of a merged MoE", issue=7)

if __name__ == "__main__":
    sys.exit(main())
