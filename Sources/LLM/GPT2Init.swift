// GPT-2's random initialisation, drawn in the order llm.c (and PyTorch's module order) uses, so
// a descriptor model (`d12`) starts from the same weights as llm.c's for the same seed.

/// N fp32 parameters in checkpoint order: N(0, 0.02) for wte (first V rows; the pad rows stay 0),
/// wpe, qkvw and fcw; N(0, 0.02/sqrt(2L)) for the residual projections attprojw and fcprojw;
/// layernorm weights 1; biases 0. One `normal` call per tensor slice, layer-major.
public func gpt2InitialParameters(_ config: GPT2Config, seed: UInt64 = 42) -> [Float] {
    let layout = ParameterLayout(config)
    let L = config.numLayers, C = config.channels
    var params = [Float](repeating: 0, count: layout.count)
    var rng = MersenneTwister(seed: seed)
    let residualStd = 0.02 / Float(2 * L).squareRoot()
    params.withUnsafeMutableBufferPointer { buf in
        let p = buf.baseAddress!
        func draw(_ t: ParameterTensor, from: Int, count: Int, std: Float) {
            rng.normal(into: p + layout.offset(t) + from, count: count, mean: 0, std: std)
        }
        for l in 0 ..< L {
            if l == 0 {
                draw(.wte, from: 0, count: config.vocabSize * C, std: 0.02)
                draw(.wpe, from: 0, count: layout.size(.wpe), std: 0.02)
                for t in [ParameterTensor.ln1w, .ln2w, .lnfw] {
                    for i in layout.range(t) { p[i] = 1 }
                }
            }
            draw(.qkvw, from: l * 3 * C * C, count: 3 * C * C, std: 0.02)
            draw(.attprojw, from: l * C * C, count: C * C, std: residualStd)
            draw(.fcw, from: l * 4 * C * C, count: 4 * C * C, std: 0.02)
            draw(.fcprojw, from: l * 4 * C * C, count: 4 * C * C, std: residualStd)
        }
    }
    return params
}
