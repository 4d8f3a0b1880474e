// The encoding hot path: scan pre-tokens on UTF-8 bytes, look each up as a whole token, else in a
// word cache, else run byte-pair merges by rank. One TokenEncoder per thread (it owns the cache).

// MARK: - Output buffer

/// A growable Int32 buffer without Array's per-append uniqueness checks.
struct TokenIdBuffer {
    var pointer: UnsafeMutablePointer<Int32>
    var count = 0
    var capacity: Int

    init(capacity: Int) {
        self.capacity = max(capacity, 16)
        pointer = .allocate(capacity: self.capacity)
    }

    @inline(__always) mutating func append(_ id: Int32) {
        if count == capacity { grow(count + 1) }
        pointer[count] = id
        count += 1
    }

    mutating func grow(_ needed: Int) {
        let newCapacity = max(needed, capacity * 2)
        let fresh = UnsafeMutablePointer<Int32>.allocate(capacity: newCapacity)
        fresh.update(from: pointer, count: count)
        pointer.deallocate()
        pointer = fresh
        capacity = newCapacity
    }

    func toArray() -> [Int32] { Array(UnsafeBufferPointer(start: pointer, count: count)) }
    func deallocate() { pointer.deallocate() }
}

// MARK: - Encoder

/// Encodes ordinary text (no special tokens) with one tokenizer. Not thread-safe: make one per thread.
public final class TokenEncoder {
    let tokenizer: Tokenizer
    let ranks: ByteKeyTable
    let stage1: UnsafePointer<UInt16>
    let stage2: UnsafePointer<UInt8>
    /// Word cache: a piece's bytes -> (offset, count) of its ids in `cacheIds`.
    var cache = ByteKeyTable(capacityPowerOfTwo: 15)
    var cacheIds = TokenIdBuffer(capacity: 1 << 15)
    /// BPE scratch: part start offsets and the rank of each adjacent pair.
    var starts: UnsafeMutablePointer<Int32>
    var pairRanks: UnsafeMutablePointer<Int32>
    var scratchCapacity = 256

    init(_ tokenizer: Tokenizer) {
        self.tokenizer = tokenizer
        ranks = tokenizer.ranks
        stage1 = UnsafePointer(tokenizer.classes.stage1)
        stage2 = UnsafePointer(tokenizer.classes.stage2)
        starts = .allocate(capacity: scratchCapacity)
        pairRanks = .allocate(capacity: scratchCapacity)
    }

    deinit {
        cache.deallocate()
        cacheIds.deallocate()
        starts.deallocate()
        pairRanks.deallocate()
    }

    /// Encodes valid UTF-8 (not checked here) as ordinary text.
    public func encode(utf8 text: UnsafeBufferPointer<UInt8>) -> [Int32] {
        guard let p = text.baseAddress, text.count > 0 else { return [] }
        var out = TokenIdBuffer(capacity: text.count / 3 + 16)
        defer { out.deallocate() }
        encode(p, text.count, &out)
        return out.toArray()
    }

    /// Appends the ids of p[0..<n] (valid UTF-8) to `out`.
    func encode(_ p: UnsafePointer<UInt8>, _ n: Int, _ out: inout TokenIdBuffer) {
        let ranks = self.ranks
        let stage1 = self.stage1, stage2 = self.stage2
        var i = 0
        while i < n {
            let end = preTokenEnd(p, i, n, stage1, stage2)
            let len = end - i
            let piece = p + i
            let whole = ranks.value0(piece, len)
            if whole >= 0 {
                out.append(whole)
            } else {
                encodePiece(piece, len, &out)
            }
            i = end
        }
    }

    /// A piece that is not one token: from the cache, or merged and then cached.
    func encodePiece(_ piece: UnsafePointer<UInt8>, _ len: Int, _ out: inout TokenIdBuffer) {
        let slot = cache.find(piece, len)
        if slot >= 0 {
            let s = cache.slots[slot]
            let k = Int(s.value1)
            if out.count + k > out.capacity { out.grow(out.count + k) }
            (out.pointer + out.count).update(from: cacheIds.pointer + Int(s.value0), count: k)
            out.count += k
            return
        }
        let before = out.count
        bytePairMerge(piece, len, &out)
        let k = out.count - before
        if cache.isFull || cacheIds.count > 1 << 22 {
            cache.removeAll()
            cacheIds.count = 0
        }
        let offset = cacheIds.count
        for t in 0..<k { cacheIds.append(out.pointer[before + t]) }
        cache.insert(piece, len, Int32(offset), Int32(k))
    }

    // MARK: Byte-pair merge

    /// Splits p[0..<n] into single bytes and repeatedly merges the adjacent pair whose
    /// concatenation has the lowest rank (leftmost on ties) until no pair is a token.
    func bytePairMerge(_ p: UnsafePointer<UInt8>, _ n: Int, _ out: inout TokenIdBuffer) {
        let ranks = self.ranks
        let none = Int32.max
        if n + 1 > scratchCapacity {
            starts.deallocate(); pairRanks.deallocate()
            scratchCapacity = max(n + 1, scratchCapacity * 2)
            starts = .allocate(capacity: scratchCapacity)
            pairRanks = .allocate(capacity: scratchCapacity)
        }
        let starts = self.starts, pairRanks = self.pairRanks
        for i in 0...n { starts[i] = Int32(i) }
        // pairRanks[i] = rank of parts i and i+1 together, for i in 0..<parts-1.
        for i in 0..<(n - 1) {
            let r = ranks.value0(p + i, 2)
            pairRanks[i] = r < 0 ? none : r
        }
        var boundaries = n + 1  // parts = boundaries - 1
        @inline(__always) func rankOfPair(_ i: Int, _ boundaries: Int) -> Int32 {
            if i + 2 >= boundaries { return none }
            let a = Int(starts[i])
            let r = ranks.value0(p + a, Int(starts[i + 2]) - a)
            return r < 0 ? none : r
        }
        while boundaries > 2 {
            var best = none
            var at = -1
            for i in 0..<(boundaries - 2) where pairRanks[i] < best {
                best = pairRanks[i]
                at = i
            }
            if at < 0 { break }
            // Merge parts `at` and `at + 1` by removing boundary at + 1.
            let tail = boundaries - (at + 2)
            (starts + at + 1).update(from: starts + at + 2, count: tail)
            if tail > 2 { (pairRanks + at + 1).update(from: pairRanks + at + 2, count: tail - 2) }
            boundaries -= 1
            pairRanks[at] = rankOfPair(at, boundaries)
            if at > 0 { pairRanks[at - 1] = rankOfPair(at - 1, boundaries) }
        }
        for i in 0..<(boundaries - 1) {
            let a = Int(starts[i])
            out.append(ranks.value0(p + a, Int(starts[i + 1]) - a))
        }
    }
}
