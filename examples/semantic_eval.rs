//! Evaluates the semantic cache's hit decision (similarity threshold, then guards) on a labelled
//! set of question pairs, with the gateway's own encoder and guards.
//!
//! Usage: `semantic_eval [MODEL_DIR] [PAIRS_TSV...] [--default T] [--show] [--raw]
//! [--all-scripts]`; defaults
//! `models/all-MiniLM-L6-v2`, `load-tests/semantic/pairs-agent.tsv` plus
//! `load-tests/semantic/pairs-public.tsv` when it has been built, and 0.90. A pairs file is
//! tab-separated with the header `a b label kind lang source`; label 1 is a paraphrase (a hit
//! should be served), 0 is not (a hit would be a wrong answer). Kinds other than `paraphrase`
//! and `unrelated` count as hard negatives. `--show` also lists, at the default threshold, the
//! false hits the guards let through and the paraphrases they refused. As in the gateway, what
//! is embedded is `canonical(text)` (`--raw`: the text itself), the guards see the texts, and a
//! pair where either text is not mostly in a script the model covers is exact-only: never a
//! semantic hit (`--all-scripts`: embed and compare it anyway, to measure a multilingual
//! model). See `load-tests/semantic/README.md`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clawgate::semantic::canonical::canonical;
use clawgate::semantic::embed::{similarity, Encoder};
use clawgate::semantic::guards::{refuses, Guard};
use clawgate::semantic::script::covered;

struct Pair {
    a: String,
    b: String,
    paraphrase: bool,
    kind: String,
    lang: String,
    /// `agent` or `public`.
    set: &'static str,
    sim: f32,
    /// Exact-only: a text is not in a script the model covers.
    skipped: bool,
}

impl Pair {
    fn hard(&self) -> bool {
        !self.paraphrase && self.kind != "unrelated"
    }

    /// Whether the similarity alone would serve a hit at `t`.
    fn hit(&self, t: f32) -> bool {
        !self.skipped && self.sim >= t
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("semantic_eval: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The command line: the model directory, the pair files, `--default T` and `--show`.
struct Args {
    model: PathBuf,
    files: Vec<PathBuf>,
    default: f32,
    show: bool,
    raw: bool,
    all_scripts: bool,
}

impl Args {
    fn read() -> Result<Args, String> {
        let mut positional = Vec::new();
        let mut default = 0.90f32;
        let mut show = false;
        let (mut raw, mut all_scripts) = (false, false);
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            if arg == "--show" {
                show = true;
            } else if arg == "--raw" {
                raw = true;
            } else if arg == "--all-scripts" {
                all_scripts = true;
            } else if arg == "--default" {
                let v = args.next().ok_or("--default needs a threshold")?;
                default = v
                    .parse()
                    .map_err(|_| format!("--default {v}: not a number"))?;
            } else {
                positional.push(arg);
            }
        }
        let model = PathBuf::from(
            positional
                .first()
                .map_or("models/all-MiniLM-L6-v2", |s| s.as_str()),
        );
        let mut files: Vec<PathBuf> = positional.iter().skip(1).map(PathBuf::from).collect();
        if files.is_empty() {
            files.push("load-tests/semantic/pairs-agent.tsv".into());
            // The public sample is not committed (see SOURCES.md): use it when it has been built.
            let public = PathBuf::from("load-tests/semantic/pairs-public.tsv");
            if public.exists() {
                files.push(public);
            } else {
                eprintln!(
                    "semantic_eval: {} not built (build_pairs.py public ...): agent pairs only",
                    public.display()
                );
            }
        }
        Ok(Args {
            model,
            files,
            default,
            show,
            raw,
            all_scripts,
        })
    }
}

fn run() -> Result<(), String> {
    let args = Args::read()?;
    let encoder =
        Encoder::load(&args.model).map_err(|e| format!("{}: {e}", args.model.display()))?;
    let mut pairs = Vec::new();
    for path in &args.files {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        pairs.extend(parse(&text).map_err(|e| format!("{}: {e}", path.display()))?);
    }
    let started = Instant::now();
    if !args.all_scripts {
        for p in pairs.iter_mut() {
            p.skipped = !covered(&p.a) || !covered(&p.b);
        }
    }
    let texts = embed_all(&encoder, &mut pairs, args.raw)?;
    let elapsed = started.elapsed();
    println!(
        "{} pairs from {}, {} distinct texts embedded in {:.1} s ({:.1} ms each), model {}",
        pairs.len(),
        args.files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(" + "),
        texts,
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / texts.max(1) as f64,
        args.model.display()
    );
    census(&pairs);
    let skipped: Vec<&Pair> = pairs.iter().filter(|p| p.skipped).collect();
    println!(
        "embedded: {}; exact-only (a text not mostly in a script the model covers, never a \
         semantic hit): {} pairs ({} en, {} zh)",
        if args.raw {
            "the texts"
        } else {
            "canonical(text)"
        },
        skipped.len(),
        skipped.iter().filter(|p| p.lang == "en").count(),
        skipped.iter().filter(|p| p.lang == "zh").count(),
    );
    report(&pairs, args.default);
    if args.show {
        show_mistakes(&pairs, args.default);
    }
    Ok(())
}

/// Each pair's similarity; a text in many pairs (agent bases have several variants) is
/// embedded once. The number of distinct texts.
fn embed_all(encoder: &Encoder, pairs: &mut [Pair], raw: bool) -> Result<usize, String> {
    let form = |t: &str| if raw { t.to_string() } else { canonical(t) };
    let mut vectors: HashMap<String, Vec<f32>> = HashMap::new();
    let mut times = Vec::new();
    for p in pairs.iter().filter(|p| !p.skipped) {
        for t in [form(&p.a), form(&p.b)] {
            if let std::collections::hash_map::Entry::Vacant(slot) = vectors.entry(t) {
                let started = Instant::now();
                let v = encoder
                    .embed(slot.key())
                    .map_err(|e| format!("embedding {:?}: {e}", slot.key()))?;
                times.push(started.elapsed().as_secs_f64() * 1000.0);
                slot.insert(v);
            }
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| {
        times
            .get(((times.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    println!(
        "embedding per text: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        at(0.50),
        at(0.99),
        at(1.0)
    );
    for p in pairs.iter_mut().filter(|p| !p.skipped) {
        p.sim = similarity(&vectors[&form(&p.a)], &vectors[&form(&p.b)]);
    }
    Ok(vectors.len())
}

/// The sweep for all languages and each, then the default threshold by kind.
fn report(pairs: &[Pair], default: f32) {
    // Guard verdicts do not depend on the threshold: compute them once per pair.
    let verdicts: Vec<Verdicts> = pairs.iter().map(Verdicts::of).collect();
    let mut thresholds: Vec<f32> = (0..=14).map(|i| 0.70 + 0.02 * i as f32).collect();
    if !thresholds.iter().any(|t| (t - default).abs() < 1e-4) {
        thresholds.push(default);
        thresholds.sort_by(|x, y| x.total_cmp(y));
    }
    let groups: [(Option<&str>, Option<&str>); 5] = [
        (None, None),
        (Some("en"), None),
        (Some("en"), Some("agent")),
        (Some("en"), Some("public")),
        (Some("zh"), None),
    ];
    for (lang, set) in groups {
        let chosen: Vec<usize> = (0..pairs.len())
            .filter(|&i| lang.is_none_or(|l| pairs[i].lang == l))
            .filter(|&i| set.is_none_or(|s| pairs[i].set == s))
            .collect();
        if chosen.is_empty() {
            continue;
        }
        let name = match (lang, set) {
            (None, _) => "all languages".to_string(),
            (Some(l), None) => l.to_string(),
            (Some(l), Some(s)) => format!("{l} {s}"),
        };
        println!();
        println!(
            "== {} ({} pairs: {} paraphrases, {} non-paraphrases of which {} hard) ==",
            name,
            chosen.len(),
            chosen.iter().filter(|&&i| pairs[i].paraphrase).count(),
            chosen.iter().filter(|&&i| !pairs[i].paraphrase).count(),
            chosen.iter().filter(|&&i| pairs[i].hard()).count(),
        );
        table(pairs, &verdicts, &chosen, &thresholds, default);
    }
    println!();
    println!("== by kind at the default threshold {default:.2} ==");
    by_kind(pairs, &verdicts, default);
}

/// `--show`: the false hits the guards let through, and the paraphrases they refused.
fn show_mistakes(pairs: &[Pair], default: f32) {
    println!();
    println!("== at {default:.2}: false hits served with all guards on ==");
    for p in pairs.iter().filter(|p| !p.paraphrase && p.hit(default)) {
        if refuses(&p.a, &p.b, &Guard::ALL).is_none() {
            println!("{:.3} {}/{}\t{}\t{}", p.sim, p.lang, p.kind, p.a, p.b);
        }
    }
    println!();
    println!("== at {default:.2}: paraphrases refused by a guard ==");
    for p in pairs.iter().filter(|p| p.paraphrase && p.hit(default)) {
        if let Some(g) = refuses(&p.a, &p.b, &Guard::ALL) {
            println!("{:.3} {}/{}\t{}\t{}", p.sim, p.lang, g.name(), p.a, p.b);
        }
    }
}

fn parse(text: &str) -> Result<Vec<Pair>, String> {
    let mut lines = text.lines().enumerate();
    let header: Vec<&str> = match lines.next() {
        Some((_, h)) => h.split('\t').collect(),
        None => return Err("empty file".into()),
    };
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or(format!("no column {name:?} in the header"))
    };
    let (ca, cb, cl, ck, cg, cs) = (
        col("a")?,
        col("b")?,
        col("label")?,
        col("kind")?,
        col("lang")?,
        col("source")?,
    );
    let mut pairs = Vec::new();
    for (n, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let field = |c: usize| {
            fields.get(c).copied().ok_or(format!(
                "line {}: {} fields, expected {}",
                n + 1,
                fields.len(),
                header.len()
            ))
        };
        let paraphrase = match field(cl)? {
            "1" => true,
            "0" => false,
            other => return Err(format!("line {}: label {other:?} is not 0 or 1", n + 1)),
        };
        pairs.push(Pair {
            a: field(ca)?.to_string(),
            b: field(cb)?.to_string(),
            paraphrase,
            kind: field(ck)?.to_string(),
            lang: field(cg)?.to_string(),
            set: if field(cs)? == "agent" {
                "agent"
            } else {
                "public"
            },
            sim: 0.0,
            skipped: false,
        });
    }
    if pairs.is_empty() {
        return Err("no pairs".into());
    }
    Ok(pairs)
}

fn census(pairs: &[Pair]) {
    let mut counts: BTreeMap<(String, String, bool), usize> = BTreeMap::new();
    for p in pairs {
        *counts
            .entry((p.lang.clone(), p.kind.clone(), p.paraphrase))
            .or_default() += 1;
    }
    let line: Vec<String> = counts
        .iter()
        .map(|((lang, kind, para), n)| format!("{lang}/{kind}{}={n}", if *para { "+" } else { "" }))
        .collect();
    println!("pairs by lang/kind (+ = paraphrase): {}", line.join(" "));
}

/// Which guards refuse a pair: all together, and each on its own.
struct Verdicts {
    all: bool,
    each: [bool; 3],
}

impl Verdicts {
    fn of(p: &Pair) -> Verdicts {
        let mut each = [false; 3];
        for (slot, g) in each.iter_mut().zip(Guard::ALL) {
            *slot = refuses(&p.a, &p.b, &[g]).is_some();
        }
        Verdicts {
            all: refuses(&p.a, &p.b, &Guard::ALL).is_some(),
            each,
        }
    }
}

#[derive(Default)]
struct Row {
    para: usize,
    para_hit: usize,
    para_hit_guarded: usize,
    non: usize,
    non_hit: usize,
    non_hit_guarded: usize,
    hard: usize,
    hard_hit: usize,
    hard_hit_guarded: usize,
    stopped: [usize; 3],
}

fn row(pairs: &[Pair], verdicts: &[Verdicts], chosen: &[usize], t: f32) -> Row {
    let mut r = Row::default();
    for &i in chosen {
        let (p, v) = (&pairs[i], &verdicts[i]);
        let hit = p.hit(t);
        let served = hit && !v.all;
        if p.paraphrase {
            r.para += 1;
            r.para_hit += hit as usize;
            r.para_hit_guarded += served as usize;
            continue;
        }
        r.non += 1;
        r.non_hit += hit as usize;
        r.non_hit_guarded += served as usize;
        if p.hard() {
            r.hard += 1;
            r.hard_hit += hit as usize;
            r.hard_hit_guarded += served as usize;
        }
        if hit {
            for (s, refused) in r.stopped.iter_mut().zip(v.each) {
                *s += refused as usize;
            }
        }
    }
    r
}

fn pct(n: usize, of: usize) -> String {
    if of == 0 {
        "-".into()
    } else {
        format!("{:.1}", 100.0 * n as f64 / of as f64)
    }
}

fn table(
    pairs: &[Pair],
    verdicts: &[Verdicts],
    chosen: &[usize],
    thresholds: &[f32],
    default: f32,
) {
    println!(
        "{:>6} | {:>8} {:>8} | {:>8} {:>8} | {:>8} {:>8} | {:>5} {:>5} {:>5} | {:>7}",
        "thresh",
        "para-off",
        "para-on",
        "fh-off",
        "fh-on",
        "hard-off",
        "hard-on",
        "neg",
        "num",
        "ent",
        "refused"
    );
    for &t in thresholds {
        let r = row(pairs, verdicts, chosen, t);
        let mark = if (t - default).abs() < 1e-4 { "*" } else { " " };
        println!(
            "{:>5.2}{mark} | {:>8} {:>8} | {:>8} {:>8} | {:>8} {:>8} | {:>5} {:>5} {:>5} | {:>7}",
            t,
            pct(r.para_hit, r.para),
            pct(r.para_hit_guarded, r.para),
            pct(r.non_hit, r.non),
            pct(r.non_hit_guarded, r.non),
            pct(r.hard_hit, r.hard),
            pct(r.hard_hit_guarded, r.hard),
            r.stopped[0],
            r.stopped[1],
            r.stopped[2],
            r.para_hit - r.para_hit_guarded,
        );
    }
}

fn by_kind(pairs: &[Pair], verdicts: &[Verdicts], t: f32) {
    let mut groups: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (i, p) in pairs.iter().enumerate() {
        let kind = if p.paraphrase {
            format!("{}+", p.kind)
        } else {
            p.kind.clone()
        };
        groups.entry((p.lang.clone(), kind)).or_default().push(i);
    }
    println!(
        "{:>4} {:<14} {:>5} | {:>8} {:>8} | {:>5} {:>5} {:>5}",
        "lang", "kind", "pairs", "hit-off", "hit-on", "neg", "num", "ent"
    );
    for ((lang, kind), chosen) in &groups {
        let r = row(pairs, verdicts, chosen, t);
        let (hit, on) = if r.para > 0 {
            (r.para_hit, r.para_hit_guarded)
        } else {
            (r.non_hit, r.non_hit_guarded)
        };
        println!(
            "{:>4} {:<14} {:>5} | {:>8} {:>8} | {:>5} {:>5} {:>5}",
            lang,
            kind,
            chosen.len(),
            pct(hit, chosen.len()),
            pct(on, chosen.len()),
            r.stopped[0],
            r.stopped[1],
            r.stopped[2],
        );
    }
}
