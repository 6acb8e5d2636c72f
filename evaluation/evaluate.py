"""Score predictions against references (BLEU, ROUGE-L, METEOR, NIST, BERTScore, MoverScore, MAUVE) (not built yet: issue #4)."""
import sys

from run_config.stub import stub_stage

build_parser, main = stub_stage("evaluate", "Score predictions against references (BLEU, ROUGE-L, METEOR, NIST, BERTScore, MoverScore, MAUVE)", issue=4)

if __name__ == "__main__":
    sys.exit(main())
