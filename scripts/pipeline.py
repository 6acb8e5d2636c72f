"""Run preprocess -> cluster -> train -> merge -> router -> infer -> evaluate end to end (not built yet: issue #9)."""
import sys

from run_config.stub import stub_stage

build_parser, main = stub_stage("pipeline", "Run preprocess -> cluster -> train -> merge -> router -> infer -> evaluate end to end", issue=9)

if __name__ == "__main__":
    sys.exit(main())
