// Random numbers that match llm.c bit for bit: xorshift64* for sampling and stochastic-rounding
// seeds, and a Mersenne Twister identical to torch's CPU generator for init and data shuffling.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - xorshift64*

/// llm.c's `random_u32`/`random_f32` generator; the state is a plain UInt64 so it can be saved.
public struct XorShift: Equatable {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }

    @inline(__always) public mutating func nextUInt32() -> UInt32 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return UInt32(truncatingIfNeeded: (state &* 0x2545F4914F6CDD1D) >> 32)
    }

    /// Uniform in [0, 1) with 24 bits.
    @inline(__always) public mutating func nextFloat() -> Float {
        Float(nextUInt32() >> 8) / 16777216.0
    }
}

// MARK: - Mersenne Twister (torch-compatible)

/// MT19937 with torch's seeding, uniform and normal conventions, so `normal` fills tensors with
/// the same numbers `torch.manual_seed(s); t.normal_()` gives on the CPU.
public struct MersenneTwister: Equatable {
    static let n = 624, m = 397
    static let matrixA: UInt32 = 0x9908_B0DF
    public private(set) var state: [UInt32]
    public private(set) var index: Int
    public let seed: UInt64

    public init(seed: UInt64) {
        self.seed = seed
        var s = [UInt32](repeating: 0, count: Self.n)
        s[0] = UInt32(truncatingIfNeeded: seed)
        for i in 1 ..< Self.n {
            s[i] = 1_812_433_253 &* (s[i - 1] ^ (s[i - 1] >> 30)) &+ UInt32(i)
        }
        state = s
        index = Self.n
    }

    /// Restores a generator saved with `savedWords` (used by training-state checkpoints).
    public init(savedWords w: [UInt32]) throws {
        guard w.count == Self.n + 3 else { throw LLMError("mt19937 state: \(w.count) words, expected \(Self.n + 3)") }
        seed = UInt64(w[0]) | UInt64(w[1]) << 32
        index = Int(w[2])
        state = Array(w[3...])
        if index < 0 || index > Self.n { throw LLMError("mt19937 state: index \(index) out of range") }
    }

    /// seed (2 words), index, then the 624 state words.
    public var savedWords: [UInt32] {
        [UInt32(truncatingIfNeeded: seed), UInt32(truncatingIfNeeded: seed >> 32), UInt32(index)] + state
    }

    mutating func twist() {
        let n = Self.n, m = Self.m
        state.withUnsafeMutableBufferPointer { s in
            for i in 0 ..< n {
                let y = (s[i] & 0x8000_0000) | (s[(i + 1) % n] & 0x7FFF_FFFF)
                var v = s[(i + m) % n] ^ (y >> 1)
                if y & 1 != 0 { v ^= Self.matrixA }
                s[i] = v
            }
        }
        index = 0
    }

    public mutating func nextUInt32() -> UInt32 {
        if index >= Self.n { twist() }
        var y = state[index]
        index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C_5680
        y ^= (y << 15) & 0xEFC6_0000
        y ^= y >> 18
        return y
    }

    public mutating func nextUInt64() -> UInt64 {
        let hi = UInt64(nextUInt32())
        return hi << 32 | UInt64(nextUInt32())
    }

    /// torch's float uniform: 24 random bits.
    public mutating func nextFloat() -> Float {
        Float(nextUInt32() & 0xFF_FFFF) * (1.0 / 16_777_216.0)
    }

    /// torch's double uniform: 53 random bits.
    public mutating func nextDouble() -> Double {
        Double(nextUInt64() & ((1 << 53) - 1)) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// Fills `count` floats with N(mean, std) exactly as torch's CPU `normal_`: for 16 or more
    /// values, uniforms first, then Box-Muller in blocks of 16 (the last block redrawn when
    /// count % 16 != 0); below 16, the double-precision path.
    public mutating func normal(into data: UnsafeMutablePointer<Float>, count: Int, mean: Float, std: Float) {
        if count >= 16 {
            for i in 0 ..< count { data[i] = nextFloat() }
            var i = 0
            while i + 16 <= count {
                Self.boxMuller16(data + i, mean: mean, std: std)
                i += 16
            }
            if count % 16 != 0 {
                let tail = data + (count - 16)
                for j in 0 ..< 16 { tail[j] = nextFloat() }
                Self.boxMuller16(tail, mean: mean, std: std)
            }
        } else {
            var cached: Double? = nil
            for i in 0 ..< count {
                if let c = cached {
                    data[i] = Float(c * Double(std) + Double(mean))
                    cached = nil
                    continue
                }
                let u1 = nextDouble(), u2 = nextDouble()
                let radius = (-2.0 * log(1.0 - u2)).squareRoot()
                let theta = 2.0 * Double.pi * u1
                cached = radius * sin(theta)
                data[i] = Float(radius * cos(theta) * Double(std) + Double(mean))
            }
        }
    }

    @inline(__always) static func boxMuller16(_ d: UnsafeMutablePointer<Float>, mean: Float, std: Float) {
        for j in 0 ..< 8 {
            let u1 = 1 - d[j]  // (0, 1]: keeps log finite
            let u2 = d[j + 8]
            let radius = (-2 * logf(u1)).squareRoot()
            let theta = Float(2.0 * Double.pi) * u2  // in float, as torch's vectorised path
            d[j] = mean.addingProduct(radius * cosf(theta), std)
            d[j + 8] = mean.addingProduct(radius * sinf(theta), std)
        }
    }

    /// A random permutation of 0..<count (Fisher-Yates from the end, j = u32 % (i + 1)).
    public mutating func permutation(_ count: Int) -> [Int32] {
        var p = (0 ..< count).map { Int32($0) }
        var i = count - 1
        while i > 0 {
            let j = Int(nextUInt32() % UInt32(i + 1))
            p.swapAt(i, j)
            i -= 1
        }
        return p
    }
}

// MARK: - Sampling

/// First index whose running cdf exceeds `coin` (llm.c `sample_mult`); `probs` sums to 1.
public func sampleMult(_ probs: UnsafePointer<Float>, _ n: Int, coin: Float) -> Int {
    var cdf: Float = 0
    for i in 0 ..< n {
        cdf += probs[i]
        if coin < cdf { return i }
    }
    return n - 1
}

/// Samples from softmax(logits / temperature) without a probability buffer, with optional top-k;
/// temperature 1 and no top-k is llm.c's GPU `sample_softmax` (sum in double, no max subtraction
/// there; here the max is subtracted, which leaves the distribution unchanged and avoids overflow).
public func sampleSoftmax(_ logits: [Float], coin: Float, temperature: Float = 1, topK: Int = 0) -> Int {
    let n = logits.count
    var candidates = Array(0 ..< n)
    if topK > 0 && topK < n {
        candidates.sort { logits[$0] > logits[$1] || (logits[$0] == logits[$1] && $0 < $1) }
        candidates = Array(candidates.prefix(topK)).sorted()
    }
    let invT = 1 / max(temperature, 1e-6)
    let maxLogit = candidates.map { logits[$0] }.max() ?? 0
    var norm: Double = 0
    for i in candidates { norm += Double(expf((logits[i] - maxLogit) * invT)) }
    let target = Float(Double(coin) * norm)
    var cdf: Float = 0
    for i in candidates {
        cdf += expf((logits[i] - maxLogit) * invT)
        if target < cdf { return i }
    }
    return candidates.last ?? 0
}
