#!/usr/bin/env python3
"""Makes the tokenizer parity fixtures in tests/fixtures/tokenizer/ from Hugging Face.

Usage (in a throwaway virtual environment, from the repository root):
    python3 -m venv /tmp/tokvenv && /tmp/tokvenv/bin/pip install transformers tokenizers
    /tmp/tokvenv/bin/python tools/make_tokenizer_parity.py [--data ../shared/data] [--out tests/fixtures/tokenizer]

The reference is transformers' BertTokenizer (in transformers >= 5 it is the `tokenizers`-backed
fast tokenizer, the same as BertTokenizerFast), built from the bert-base-uncased and
bert-base-cased vocab.txt files in the data folder. It writes:
  corpus.txt             one text per line, raw bytes (lines split on b"\\n" only): real sentences
                         from the data folder (research use) and synthetic lines (accents, CJK, emoji,
                         control characters, unusual whitespace, very long words, punctuation runs,
                         mixed scripts, invalid UTF-8, special tokens written in the text)
  pairs.txt              "a<TAB>b" per line (first tab separates), real and synthetic pairs
  expected_{uncased,cased}.txt
                         per corpus line: ids<TAB>offsets ("begin,end" in characters, space separated)
  expected_pairs_{uncased,cased}.txt
                         per pair line: max_length<TAB>strategy<TAB>ids<TAB>type_ids<TAB>offsets,
                         or max_length<TAB>strategy<TAB>ERROR when HF refuses the truncation
                         (max_length 0 = no truncation)
  codepoints.tsv         how HF's normalizer + pre-tokenizer treat every code point c in the probe
                         "a" + c + "a", run-length encoded: first_cp last_cp cased uncased (hex cps),
                         where a result is the pieces joined by "|", each character written as "C"
                         (the probe character itself), "a", or its code point in hex
Text given to HF is the line decoded with errors="replace", as the engine decodes invalid UTF-8.
Everything is seeded: running it twice gives the same files.
"""
import argparse
import csv
import json
import os
import random
import sys

from transformers import BertTokenizer

SEED = 1234
STRATEGIES = ["longest_first", "only_first", "only_second"]
MAX_LENGTHS = [0, 3, 5, 8, 12, 16, 24, 32, 64, 128, 512]


def read_real_texts(data):
    """Real sentences from the shared data sets (research use only)."""
    texts, pairs = [], []
    with open(os.path.join(data, "sst2/train.tsv"), encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    texts += [r[0] for r in rows[:3000]]
    with open(os.path.join(data, "agnews/train_10k.tsv"), encoding="utf-8") as f:
        texts += [line.split("\t")[0] for line in f.read().split("\n")[:1500] if line]
    sentence = []
    n_conll = 0
    with open(os.path.join(data, "conll2003/train.txt"), encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("-DOCSTART-"):
                if sentence and n_conll < 1000:
                    texts.append(" ".join(sentence))
                    n_conll += 1
                sentence = []
            else:
                sentence.append(line.split(" ")[0])
    with open(os.path.join(data, "squad_v2_dev_subset/dev-v2.0-first5articles.json"), encoding="utf-8") as f:
        squad = json.load(f)
    contexts, questions = [], []
    for art in squad["data"]:
        for para in art["paragraphs"]:
            contexts.append(para["context"].replace("\n", " "))
            questions += [qa["question"] for qa in para["qas"]]
    texts += questions[:500] + contexts[:150]
    # MRPC starts with a UTF-8 BOM, which stays in the first line: a real-world Cf character.
    with open(os.path.join(data, "mrpc/train.tsv"), encoding="utf-8") as f:
        rows = f.read().split("\n")[1:]
    pairs += [(r.split("\t")[3], r.split("\t")[4]) for r in rows[:1500] if r.count("\t") >= 4]
    with open(os.path.join(data, "stsb/train.tsv"), encoding="utf-8") as f:
        rows = f.read().split("\n")[1:]
    pairs += [(r.split("\t")[7], r.split("\t")[8]) for r in rows[:1500] if r.count("\t") >= 9]
    pairs += [(q, c) for q, c in zip(questions[150:], contexts[:150])]
    return [t.encode("utf-8") for t in texts], [(a.encode("utf-8"), b.encode("utf-8")) for a, b in pairs]


WORDS = ("the quick brown fox jumps over lazy dog tokenizer engine research language model "
         "running unbelievable internationalization playing played plays school naïve café").split()
ACCENTED = "àáâãäåæçèéêëìíîïðñòóôõöøùúûüýþÿĀāĂăĄąĆćČčĎďĒēĘęĚěĞğĪīİıŁłŃńŇňŌōŐőŒœŘřŚśŞşŠšŢţŤťŪūŮůŰűŸŹźŻżŽžǅǈǋ"
COMBINING = [chr(c) for c in range(0x300, 0x370)] + ["\u0483", "\u05B0", "\u064B", "\u0901", "\u093C", "\u20DD", "\uFE20"]
CJK = [chr(c) for c in range(0x4E00, 0x4E00 + 400)] + [chr(c) for c in range(0x3400, 0x3440)] + \
      [chr(c) for c in range(0xF900, 0xF920)] + [chr(c) for c in range(0x20000, 0x20020)] + \
      [chr(c) for c in range(0x2F800, 0x2F810)]
KANA_HANGUL = [chr(c) for c in range(0x3041, 0x3097)] + [chr(c) for c in range(0x30A1, 0x30FB)] + \
              [chr(c) for c in range(0xAC00, 0xAC00 + 300)] + [chr(c) for c in range(0x1100, 0x1113)]
EMOJI = ["😀", "😂", "🥰", "🫠", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "🇯🇵", "❤️", "☺︎", "🏳️‍🌈", "🤖", "🧑🏿‍🚀", "✌🏻", "#️⃣", "🀄", "🃏", "🌍"]
CONTROLS = ["\x00", "\x01", "\x07", "\x08", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f", "\x85", "\x9f",
            "\u200b", "\u200c", "\u200d", "\u200e", "\u202e", "\u2060", "\ufeff", "\u00ad", "\ufffd",
            "\ue000", "\U000F0000", "\U000E0001", "\u061c", "\u180e", "\ufff9"]
SPACES = [" ", "  ", "\t", "\r", "\u00a0", "\u1680", "\u2000", "\u2003", "\u2009", "\u200a", "\u2028",
          "\u2029", "\u202f", "\u205f", "\u3000", " \t "]
PUNCT = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + ["¡", "¿", "«", "»", "–", "—", "‘", "’", "“", "”", "…",
         "‰", "†", "‡", "•", "、", "。", "「", "」", "『", "』", "【", "】", "〜", "・", "！", "？", "（", "）",
         "¶", "§", "©", "®", "°", "±", "×", "÷", "€", "£", "¥", "¢", "₹", "∞", "≠", "√", "⁂", "⸘", "‽", "٪", "؟", "।", "፧"]
SCRIPTS = ["Привет мир, как дела?", "Ελληνικά ΚΕΙΜΕΝΑ ΟΔΟΣ Σοφία", "שלום עולם", "مرحبا بالعالم",
           "नमस्ते दुनिया", "สวัสดีชาวโลก", "こんにちは世界", "안녕하세요 세계", "你好，世界！", "Γειά σου Κόσμε",
           "Ünïcödé Çhàràçtérs", "İSTANBUL ıstanbul", "straße STRASSE ẞ", "ﬁnancial ﬂow ǄǅǆǇ", "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ",
           "𝐌𝐚𝐭𝐡 𝔉𝔯𝔞𝔨𝔱𝔲𝔯 𝟙𝟚𝟛", "Ⅻ ⅻ ① ⑳ ½ ¾ ²³", "ǲ Ǳ ǳ", "Ωμέγα ώρα", "Ꭰꭰ Cherokee", "Ⓐⓑⓒ", "ᾼ ᾳ ῼ"]
INVALID = [b"\xff", b"\xfe", b"\xc0\xaf", b"\xe2\x82", b"\xed\xa0\x80", b"\xf0\x9f\x98", b"\xf8\x88\x80\x80\x80",
           b"\x80", b"\xbf\xbf", b"\xc3", b"\xf4\x90\x80\x80", b"\xe0\x80\x80", b"\xef\xbf\xbe"]
SPECIALS = ["[CLS]", "[SEP]", "[MASK]", "[UNK]", "[PAD]", "[cls]", "[MASK", "[[SEP]]", "x[MASK]y"]


def synthetic_lines(rng, n):
    """Random lines mixing all the awkward cases, each line a mix of a few kinds of fragment."""
    def word():
        w = rng.choice(WORDS)
        if rng.random() < 0.3:
            w = w.capitalize() if rng.random() < 0.5 else w.upper()
        return w

    def fragment():
        kind = rng.randrange(14)
        if kind == 0:
            return "".join(rng.choice(ACCENTED) for _ in range(rng.randint(1, 8)))
        if kind == 1:
            w = word()
            return "".join(ch + (rng.choice(COMBINING) if rng.random() < 0.4 else "") for ch in w)
        if kind == 2:
            return "".join(rng.choice(CJK) for _ in range(rng.randint(1, 6)))
        if kind == 3:
            return "".join(rng.choice(KANA_HANGUL) for _ in range(rng.randint(1, 6)))
        if kind == 4:
            return "".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 3)))
        if kind == 5:
            return word() + rng.choice(CONTROLS) + word()
        if kind == 6:
            return rng.choice(SPACES)
        if kind == 7:  # very long words around the 100-character limit
            n_chars = rng.choice([99, 100, 101, 150, rng.randint(20, 300)])
            base = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(n_chars))
            if rng.random() < 0.3:  # accents change the length only after NFD
                base = base[: n_chars - 3] + "éèà"
            return base
        if kind == 8:
            return "".join(rng.choice(PUNCT) for _ in range(rng.randint(1, 12)))
        if kind == 9:
            return rng.choice(SCRIPTS)
        if kind == 10:
            return rng.choice(SPECIALS)
        if kind == 11:
            return "".join(chr(rng.choice([rng.randint(0x20, 0x2FFF), rng.randint(0x3000, 0xFFFD),
                                           rng.randint(0x10000, 0x10FFFF)]))
                           for _ in range(rng.randint(1, 5))).replace("\n", " ")
        if kind == 12:
            return str(rng.randint(0, 10 ** rng.randint(1, 12))) + rng.choice(["", ".5", ",000", "%", "km"])
        return word()

    lines = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 12)):
            parts.append(fragment())
            parts.append(rng.choice([" ", " ", " ", "", "\t"]))
        text = "".join(parts)
        text = "".join(ch for ch in text if not (0xD800 <= ord(ch) <= 0xDFFF))
        raw = text.encode("utf-8")
        if rng.random() < 0.15:  # invalid UTF-8 spliced in at a random byte (even mid-character)
            pos = rng.randint(0, len(raw))
            raw = raw[:pos] + rng.choice(INVALID) + raw[pos:]
        lines.append(raw.replace(b"\n", b" "))
    return lines


def decode(raw):
    return raw.decode("utf-8", errors="replace")


def encode_single(tok, raw):
    enc = tok._tokenizer.encode(decode(raw))
    offsets = " ".join(f"{b},{e}" for b, e in enc.offsets)
    return " ".join(map(str, enc.ids)) + "\t" + offsets


def encode_pair(tok, a, b, max_length, strategy):
    t = tok._tokenizer
    if max_length:
        t.enable_truncation(max_length, strategy=strategy)
    else:
        t.no_truncation()
    try:
        enc = t.encode(decode(a), decode(b))
    except Exception:
        return f"{max_length}\t{strategy}\tERROR"
    finally:
        t.no_truncation()
    offsets = " ".join(f"{x},{y}" for x, y in enc.offsets)
    return (f"{max_length}\t{strategy}\t" + " ".join(map(str, enc.ids)) + "\t" +
            "".join(map(str, enc.type_ids)) + "\t" + offsets)


def codepoint_table(tokenizers):
    """Run-length encoded behaviour of every code point in the probe "a" + c + "a"."""
    def render(tok, c):
        t = tok._tokenizer
        normalized = t.normalizer.normalize_str("a" + c + "a")
        pieces = t.pre_tokenizer.pre_tokenize_str(normalized)
        out = []
        for piece, _ in pieces:
            out.append("".join("C" if ch == c else ("a" if ch == "a" else f"{ord(ch):X}.") for ch in piece))
        return "|".join(out)

    rows = []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        key = (render(tokenizers["cased"], c), render(tokenizers["uncased"], c))
        if rows and rows[-1][2] == key and rows[-1][1] == cp - 1:
            rows[-1][1] = cp
        else:
            rows.append([cp, cp, key])
    return [f"{a:X}\t{b:X}\t{k[0]}\t{k[1]}" for a, b, k in rows]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--data", default=os.path.join(here, "../../shared/data"))
    ap.add_argument("--out", default=os.path.join(here, "../tests/fixtures/tokenizer"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = random.Random(SEED)

    tokenizers = {
        "uncased": BertTokenizer(vocab=os.path.join(args.data, "vocab/bert-base-uncased/vocab.txt"), do_lower_case=True),
        "cased": BertTokenizer(vocab=os.path.join(args.data, "vocab/bert-base-cased/vocab.txt"), do_lower_case=False),
    }
    texts, pairs = read_real_texts(args.data)
    corpus = texts + synthetic_lines(rng, 4500)
    synthetic_pairs = [(rng.choice(corpus), rng.choice(corpus)) for _ in range(2000)]
    pairs = [(a.replace(b"\t", b" "), b) for a, b in pairs + synthetic_pairs]
    for line in corpus:
        assert b"\n" not in line
    with open(os.path.join(args.out, "corpus.txt"), "wb") as f:
        f.write(b"".join(line + b"\n" for line in corpus))
    with open(os.path.join(args.out, "pairs.txt"), "wb") as f:
        f.write(b"".join(a + b"\t" + b + b"\n" for a, b in pairs))

    for mode, tok in tokenizers.items():
        with open(os.path.join(args.out, f"expected_{mode}.txt"), "w", encoding="utf-8") as f:
            for line in corpus:
                f.write(encode_single(tok, line) + "\n")
        with open(os.path.join(args.out, f"expected_pairs_{mode}.txt"), "w", encoding="utf-8") as f:
            for i, (a, b) in enumerate(pairs):
                max_length = MAX_LENGTHS[i % len(MAX_LENGTHS)]
                strategy = STRATEGIES[(i // len(MAX_LENGTHS)) % len(STRATEGIES)]
                f.write(encode_pair(tok, a, b, max_length, strategy) + "\n")
        print(f"{mode}: {len(corpus)} lines, {len(pairs)} pairs", file=sys.stderr)

    with open(os.path.join(args.out, "codepoints.tsv"), "w", encoding="utf-8") as f:
        f.write("\n".join(codepoint_table(tokenizers)) + "\n")
    print("codepoints done", file=sys.stderr)


if __name__ == "__main__":
    main()
