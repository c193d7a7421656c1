#!/usr/bin/env python3
"""Writes the articles [BEGIN, END) of a SQuAD JSON file as a SQuAD JSON file of their own (the
engine's real-data runs train on some articles of ../shared/data's SQuAD subset and evaluate on
others; the split goes outside the repository). Standard library only.

Usage: python3 tools/squad_articles.py IN.json OUT.json BEGIN END
"""
import json
import sys


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    src, dst, begin, end = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    data = json.load(open(src, encoding="utf-8"))
    articles = data["data"][begin:end]
    json.dump({"version": data.get("version", ""), "data": articles}, open(dst, "w", encoding="utf-8"),
              ensure_ascii=False)
    questions = sum(len(p["qas"]) for a in articles for p in a["paragraphs"])
    print(f"{dst}: articles {begin}..{end - 1} ({', '.join(a['title'] for a in articles)}), {questions} questions")


if __name__ == "__main__":
    main()
