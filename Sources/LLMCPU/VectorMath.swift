// SIMD16 building blocks for the CPU layers: unaligned loads and stores, horizontal sums,
// and exp / tanh on 16 lanes (Swift has no vector libm, and scalar expf would dominate GELU and softmax).

import CPUFeatures
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public typealias Vec16 = SIMD16<Float>

// MARK: - Multiply-add

/// acc + a·b: one fused instruction where the build targets a CPU with FMA (-Xcc -march=...),
/// a multiply and an add otherwise. `addingProduct` alone would call libm's fmaf for every lane
/// on a baseline x86-64 build, which made the default `swift run -c release` 50x slower.
@inline(__always) func multiplyAdd(_ acc: Vec16, _ a: Vec16, _ b: Vec16) -> Vec16 {
    LLM_HAS_FMA != 0 ? acc.addingProduct(a, b) : acc + a * b
}

// MARK: - Loads, stores, reductions

@inline(__always) func load16(_ p: UnsafePointer<Float>) -> Vec16 {
    UnsafeRawPointer(p).loadUnaligned(as: Vec16.self)
}

@inline(__always) func load16(_ p: UnsafeMutablePointer<Float>) -> Vec16 {
    UnsafeRawPointer(p).loadUnaligned(as: Vec16.self)
}

@inline(__always) func store16(_ p: UnsafeMutablePointer<Float>, _ v: Vec16) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: Vec16.self)
}

/// Σ a[i]·b[i] over n floats, with SIMD16 accumulators and a scalar tail.
@inline(__always) func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc0 = Vec16(), acc1 = Vec16()
    var i = 0
    while i + 32 <= n {
        acc0 += load16(a + i) * load16(b + i)
        acc1 += load16(a + i + 16) * load16(b + i + 16)
        i += 32
    }
    if i + 16 <= n {
        acc0 += load16(a + i) * load16(b + i)
        i += 16
    }
    var s = (acc0 + acc1).sum()
    while i < n { s += a[i] * b[i]; i += 1 }
    return s
}

/// y[i] += alpha·x[i] over n floats.
@inline(__always) func axpy(_ y: UnsafeMutablePointer<Float>, _ alpha: Float, _ x: UnsafePointer<Float>, _ n: Int) {
    let a = Vec16(repeating: alpha)
    var i = 0
    while i + 16 <= n {
        store16(y + i, load16(y + i) + a * load16(x + i))
        i += 16
    }
    while i < n { y[i] += alpha * x[i]; i += 1 }
}

// MARK: - exp and tanh on 16 lanes

/// e^x on 16 lanes to about 2 ulp: x = n·ln2 + r with |r| <= ln2/2, e^r by a degree-7 polynomial,
/// 2^n put straight into the exponent bits. Lanes below -87.3 give 0 (as expf underflows).
@inline(__always) func vexp(_ xIn: Vec16) -> Vec16 {
    let lo = Vec16(repeating: -87.33), hi = Vec16(repeating: 88.7)
    var x = xIn.replacing(with: hi, where: xIn .> hi)
    x.replace(with: lo, where: x .< lo)
    // Adding 1.5·2^23 rounds to an integer and leaves n in the low mantissa bits.
    let magic = Vec16(repeating: 12582912.0)
    let t = x * Vec16(repeating: 1.44269504088896341) + magic
    let n = t - magic
    let r = x - n * Vec16(repeating: 0.693145751953125) - n * Vec16(repeating: 1.428606765330187045e-06)
    var p = Vec16(repeating: 1.0 / 5040.0)
    p = p * r + Vec16(repeating: 1.0 / 720.0)
    p = p * r + Vec16(repeating: 1.0 / 120.0)
    p = p * r + Vec16(repeating: 1.0 / 24.0)
    p = p * r + Vec16(repeating: 1.0 / 6.0)
    p = p * r + Vec16(repeating: 0.5)
    p = p * r + Vec16(repeating: 1.0)
    p = p * r + Vec16(repeating: 1.0)
    let ni = unsafeBitCast(t, to: SIMD16<Int32>.self) &- SIMD16<Int32>(repeating: 0x4B40_0000)
    let scale = unsafeBitCast((ni &+ SIMD16<Int32>(repeating: 127)) &<< SIMD16<Int32>(repeating: 23), to: Vec16.self)
    var result = p * scale
    result.replace(with: Vec16(), where: xIn .< lo)
    return result
}

/// tanh on 16 lanes as 1 - 2/(e^{2u} + 1); absolute error about 1e-7, which is all GELU needs.
@inline(__always) func vtanh(_ u: Vec16) -> Vec16 {
    let one = Vec16(repeating: 1)
    return one - Vec16(repeating: 2) / (vexp(u + u) + one)
}
