"""The numbers the LM-Lexicon paper (EACL 2026) reports, printed beside ours by the table scripts.

BLEU / ROUGE-L are (mean, std) pairs; std is None where the paper gives none. Dataset names are the
record sources of this toolkit (dataset/records.py).
"""

from __future__ import annotations

DATASETS = ("WordNet", "Oxford", "Wikipedia", "Urban", "3D-EX")

# Table 2: method -> dataset -> (BLEU, ROUGE-L); LM-Lexicon rows are means over seeds 21/42/84.
_T2_ROWS = {
    "Rerank-T5 (2021)": (30.91, 30.99, 25.56, 28.00, 55.61, 57.25, 17.77, 18.25, 34.43, 38.57),
    "Contrast-T5 (2022)": (30.81, 26.27, 22.51, 28.18, 55.26, 42.27, 17.53, 16.34, 34.27, 37.62),
    "SimpDefiner (2022)": (28.91, 20.47, 23.48, 29.59, 44.03, 49.26, 13.54, 15.37, 32.08, 31.57),
    "MDM-T5 (2023)": (31.18, 32.55, 24.16, 27.68, 54.33, 55.83, 17.53, 17.18, 32.67, 32.38),
    "Flan-T5-Def (2023)": (31.96, 40.45, 21.34, 32.39, 13.82, 23.97, 5.33, 10.61, 26.43, 25.12),
    "LlamaDict (2024)": (33.86, 43.50, 22.77, 36.46, 14.38, 25.29, 15.70, 14.51, 24.56, 26.11),
    "GPT-4-Turbo Random-ICL": (30.95, 32.61, 21.93, 30.82, 31.63, 45.89, 11.08, 12.19, 25.93, 34.48),
    "GPT-4-Turbo Retrieval-ICL": (27.46, 29.74, 20.44, 34.35, 35.40, 40.68, 22.53, 26.53, 29.73, 37.66),
    "Claude-3-Opus Random-ICL": (28.63, 27.84, 19.99, 34.21, 23.30, 35.22, 1.59, 3.08, 18.57, 28.49),
    "Claude-3-Opus Retrieval-ICL": (18.57, 21.76, 15.51, 25.99, 14.59, 15.83, 5.93, 7.19, 17.46, 24.67),
    "Gemini-1.5-Pro Random-ICL": (23.42, 26.27, 25.51, 35.97, 36.87, 48.13, 8.44, 9.59, 29.40, 38.02),
    "Gemini-1.5-Pro Retrieval-ICL": (25.24, 27.88, 28.10, 36.98, 35.59, 43.71, 8.85, 9.18, 32.99, 39.14),
    "LM-Lexicon-Dense": (36.99, 37.83, 26.09, 34.55, 57.90, 59.56, 26.09, 28.35, 35.01, 43.32),
    "LM-Lexicon-Dense + BoN-Oracle": (47.90, 44.19, 30.07, 42.78, 62.07, 68.62, 36.16, 38.87, 48.78, 49.71),
    "LM-Lexicon-Dense + BoN-ORM": (37.73, 37.94, 26.74, 35.18, 59.33, 59.46, 26.73, 28.54, 34.83, 42.68),
    "LM-Lexicon-MoE": (40.09, 40.51, 23.35, 32.94, 60.31, 55.52, 31.26, 33.81, 45.69, 46.07),
    "LM-Lexicon-MoE + BoN-Oracle": (47.39, 40.31, 30.87, 43.24, 51.62, 61.88, 35.23, 35.69, 54.84, 50.50),
    "LM-Lexicon-MoE + BoN-ORM": (40.33, 40.69, 24.18, 33.79, 60.88, 57.66, 31.08, 33.26, 45.86, 46.38),
}
_T2_STD = {
    "LM-Lexicon-Dense": (0.59, 0.45, 0.60, 0.57, 2.44, 1.50, 0.27, 0.28, 0.22, 0.27),
    "LM-Lexicon-MoE": (0.12, 0.28, 0.25, 0.49, 0.55, 0.33, 0.85, 2.26, 1.25, 1.06),
}


def _table2() -> dict[str, dict[str, dict[str, tuple[float, float | None]]]]:
    out: dict[str, dict[str, dict[str, tuple[float, float | None]]]] = {}
    for method, values in _T2_ROWS.items():
        std = _T2_STD.get(method, (None,) * len(values))
        out[method] = {
            d: {"bleu": (values[2 * i], std[2 * i]), "rougeL": (values[2 * i + 1], std[2 * i + 1])}
            for i, d in enumerate(DATASETS)
        }
    return out


TABLE2 = _table2()
# The paper's Avg. column of the Dense zero-shot row (34.63 / 38.79) is not the mean of its cells
# (36.42 / 40.72); every other Avg. is. Scripts print the mean of the cells.

# Table 3 (3D-EX, MoE): partition -> (BLEU, ROUGE-L, p vs semantic).
TABLE3 = {
    "semantic": ((45.69, 0.3), (46.07, 0.1), None),
    "none": ((35.13, 0.2), (43.46, 0.3), 2.9e-5),
    "random": ((36.24, 1.4), (43.58, 0.8), 1.6e-5),
    "lexical": ((38.13, 0.5), (44.12, 0.6), 1.3e-4),
}

# Table 4 (3D-EX, MoE): routing policy -> (BLEU, ROUGE-L, p vs domain).
TABLE4 = {
    "domain": ((45.69, 0.3), (46.07, 0.1), None),
    "token-top1": ((43.12, 0.4), (43.79, 0.5), 1.9e-3),
    "token-top2": ((45.38, 0.2), (45.21, 0.1), 8.6e-1),
    "sequence": ((44.47, 0.2), (44.82, 0.3), 2.7e-3),
}

# Fig. 5 (left): 3D-EX BLEU by number of experts N (the paper states N=1, 4 and 8 in its text).
FIG5_BLEU = {1: 41.38, 4: 45.69, 8: 46.86}

# Table 7: mean intra-cluster distance per cluster (lower = more cohesive), N = 4, 3D-EX, NV-Embed-v2.
TABLE7 = {"C0 Adjective": 0.176, "C1 Scientific": 0.168, "C2 Proper Noun": 0.173, "C3 Person Name": 0.185, "avg": 0.175}
# Table 8: mean inter-centroid distance per cluster pair (higher = better separated).
TABLE8 = {"C0-C1": 0.694, "C0-C2": 0.713, "C0-C3": 0.765, "C1-C2": 0.681, "C1-C3": 0.707, "C2-C3": 0.720, "avg": 0.713}

# Fig. 4: BoN with an oracle verifier on 64 test items per dataset, 1 to 128 samples (a curve; the
# paper prints no table of it). Fig. 7: ICL on WordNet, k = 0 ... 128 shots (Table 2 uses 32).
FIG4_MAX_SAMPLES = 128
ICL_SHOTS = 32
