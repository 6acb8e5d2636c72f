"""Generate definitions with a local model, an MoE or an API (not built yet: issue #8)."""
import sys

from run_config.stub import stub_stage

build_parser, main = stub_stage("infer", "Generate definitions with a local model, an MoE or an API", issue=8)

if __name__ == "__main__":
    sys.exit(main())
