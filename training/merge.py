"""Merge finetuned dense experts into one domain-routed MoE checkpoint (not built yet: issue #7)."""
import sys

from run_config.stub import stub_stage

build_parser, main = stub_stage("merge", "Merge finetuned dense experts into one domain-routed MoE checkpoint", issue=7)

if __name__ == "__main__":
    sys.exit(main())
