"""Builds the evaluation pairs: pairs-agent.tsv from agent_pairs.py (committed), and
pairs-public.tsv, a fixed sample of public paraphrase corpora (not committed: rebuild it from
clones of the repositories named in SOURCES.md; the fixed seed makes it the same sample).

    python3 load-tests/semantic/build_pairs.py agent > load-tests/semantic/pairs-agent.tsv
    python3 load-tests/semantic/build_pairs.py public STSB_MULTI_MT_GIT CSTS_GIT \
        > load-tests/semantic/pairs-public.tsv

Each GIT argument is a git directory (a clone, or a bare one); files are read with
`git show HEAD:path`, so no work tree is needed.
"""

import csv
import io
import random
import subprocess
import sys

import agent_pairs

SEED = 18
STSB = "PhilipMay/stsb-multi-mt"
CSTS = "zejunwang1/CSTS"


def git_show(repo, path):
    return subprocess.run(["git", "-C", repo, "show", f"HEAD:{path}"], check=True,
                          capture_output=True, text=True).stdout


def clean(text):
    # A tab or newline would break the TSV; neither carries meaning here.
    return " ".join(text.split())


def stsb(repo, lang, split, n_para, n_non, rng):
    """STS-B: a score of 4.0 or more (of 5) is a paraphrase, 1.5 or less is unrelated; the
    middle is neither reliably, so it is left out."""
    path = f"data/stsb-{lang}-{split}.csv"
    rows = list(csv.reader(io.StringIO(git_show(repo, path))))
    para = [(a, b) for a, b, s in rows if float(s) >= 4.0]
    non = [(a, b) for a, b, s in rows if float(s) <= 1.5]
    out = [(a, b, 1, "paraphrase", lang, f"{STSB}:{path}") for a, b in rng.sample(para, n_para)]
    out += [(a, b, 0, "unrelated", lang, f"{STSB}:{path}") for a, b in rng.sample(non, n_non)]
    return out


def pawsx_zh(repo, n_para, n_non, rng):
    """PAWS-X Chinese: pairs with high word overlap; its non-paraphrases swap words or phrases
    around, so they count as hard negatives (kind `swap`)."""
    path = "PAWS-X/test_2k.tsv"
    lines = git_show(repo, path).splitlines()[1:]
    rows = [line.split("\t") for line in lines]
    rows = [r for r in rows if len(r) == 4 and r[1].strip() and r[2].strip()]
    para = [(r[1], r[2]) for r in rows if r[3].strip() == "1"]
    non = [(r[1], r[2]) for r in rows if r[3].strip() == "0"]
    out = [(a, b, 1, "paraphrase", "zh", f"{CSTS}:{path}") for a, b in rng.sample(para, n_para)]
    out += [(a, b, 0, "swap", "zh", f"{CSTS}:{path}") for a, b in rng.sample(non, n_non)]
    return out


def agent(entries, lang):
    out = []
    for base, paraphrases, negatives in entries:
        texts = [base] + paraphrases
        for i, a in enumerate(texts):
            for b in texts[i + 1:]:
                out.append((a, b, 1, "paraphrase", lang, "agent"))
        # Every phrasing of the question against every near-miss: a guard must hold however
        # the cached question happened to be worded.
        for kind, b in negatives:
            for a in texts:
                out.append((a, b, 0, kind, lang, "agent"))
    return out


def main():
    if sys.argv[1:2] == ["agent"] and len(sys.argv) == 2:
        rows = agent(agent_pairs.EN, "en") + agent(agent_pairs.ZH, "zh")
    elif sys.argv[1:2] == ["public"] and len(sys.argv) == 4:
        stsb_repo, csts_repo = sys.argv[2:]
        rng = random.Random(SEED)
        rows = stsb(stsb_repo, "en", "test", 150, 150, rng)
        rows += stsb(stsb_repo, "zh", "dev", 100, 100, rng)
        rows += pawsx_zh(csts_repo, 100, 100, rng)
    else:
        sys.exit(__doc__)
    print("a\tb\tlabel\tkind\tlang\tsource")
    for a, b, label, kind, lang, source in rows:
        print(f"{clean(a)}\t{clean(b)}\t{label}\t{kind}\t{lang}\t{source}")


if __name__ == "__main__":
    main()
