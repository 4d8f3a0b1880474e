#!/usr/bin/env python3
"""Independent reference for tests: GPT-2's encoding algorithm (the `regex` module with GPT-2's
pattern, then merge-rank BPE over vocab.bpe/encoder.json), written from the published description.
Used to derive the expected llm.c Tiny Shakespeare shards' sha256 and to cross-check other corpora.

  reference-gpt2-encode.py tinyshakespeare DATA_DIR OUT_DIR   # llm.c's tiny_shakespeare_{val,train}.bin
  reference-gpt2-encode.py ids DATA_DIR FILE                  # ids of FILE as little-endian uint16 on stdout
"""
import hashlib, json, struct, sys
import regex

PATTERN = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

def byte_alphabet():
    printable = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table

class Encoder:
    def __init__(self, data_dir):
        self.encoder = json.load(open(f"{data_dir}/encoder.json", encoding="utf-8"))
        merges = open(f"{data_dir}/vocab.bpe", encoding="utf-8").read().split("\n")[1:]
        self.merge_rank = {tuple(m.split(" ")): i for i, m in enumerate(m for m in merges if m)}
        self.alphabet = byte_alphabet()
        self.cache = {}

    def bpe(self, word):
        if word in self.cache:
            return self.cache[word]
        parts = list(word)
        while len(parts) > 1:
            pairs = [(self.merge_rank.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            rank, _ = min(pairs)
            if rank == 1 << 30:
                break
            a, b = parts[min(pairs)[1]], parts[min(pairs)[1] + 1]
            merged, i = [], 0
            while i < len(parts):  # merge every occurrence of the best pair, left to right
                if i + 1 < len(parts) and parts[i] == a and parts[i + 1] == b:
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        ids = [self.encoder[p] for p in parts]
        self.cache[word] = ids
        return ids

    def encode(self, text):
        out = []
        for piece in PATTERN.findall(text):
            out += self.bpe("".join(self.alphabet[b] for b in piece.encode("utf-8")))
        return out

def write_shard(path, tokens):
    header = struct.pack("<256i", 20240520, 1, len(tokens), *([0] * 253))
    data = header + struct.pack(f"<{len(tokens)}H", *tokens)
    open(path, "wb").write(data)
    return hashlib.sha256(data).hexdigest()

if __name__ == "__main__":
    mode, data_dir = sys.argv[1], sys.argv[2]
    enc = Encoder(data_dir)
    if mode == "tinyshakespeare":
        text = open(f"{data_dir}/tinyshakespeare.txt", encoding="utf-8").read()
        # llm.c: EOT first, and one after every "\n\n"; the EOT is the special id 50256.
        sections = ("<|endoftext|>" + text.replace("\n\n", "\n\n<|endoftext|>")).split("<|endoftext|>")[1:]
        tokens = []
        for s in sections:
            tokens.append(50256)
            tokens += enc.encode(s)
        val, train = tokens[:32768], tokens[32768:]
        print("total", len(tokens), "eot", tokens.count(50256), "val", len(val), "train", len(train))
        print("val sha256", write_shard(f"{sys.argv[3]}/tiny_shakespeare_val.bin", val))
        print("train sha256", write_shard(f"{sys.argv[3]}/tiny_shakespeare_train.bin", train))
    elif mode == "ids":
        ids = enc.encode(open(sys.argv[3], encoding="utf-8").read())
        sys.stdout.buffer.write(struct.pack(f"<{len(ids)}H", *ids))
