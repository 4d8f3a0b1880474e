// The CUDA model's classifier (LM head matmul, cross-entropy, and their backward) in chunks of at
// most `classifierRows` rows, so the (B*T, Vp) logits never exist whole (6.6 GB at d12, B=64).

#if canImport(Glibc)
import Glibc
#endif
import LLM

// MARK: - State

/// What the logits buffer holds after the last forward, and whether the classifier's backward ran.
enum ClassifierState: Equatable {
    /// Nothing usable: a forward is under way or failed, or a backward has used the last one.
    case empty
    /// A plain forward of at most classifierRows rows: the logits of every row.
    case allLogits
    /// A plain forward of more rows: the last chunk's logits only; a backward recomputes the others.
    case lastChunk
    /// trainingForward ran the classifier backward, scaled for `microSteps`: dlnf (B, T, C) is in
    /// scratchBTC and dwte in the gradients.
    case backwardDone(microSteps: Int)
}

/// Rows [row, row + rows) of the B*T rows of a forward.
struct ClassifierChunk {
    let row: Int
    let rows: Int
}

extension CUDAModel {
    // MARK: - Training forward

    /// The layers, then per chunk: logits, losses and log-sum-exp, dlogits in place, and the LM
    /// head's backward (dlnf rows, dwte). backward(microSteps:) then starts at the final layernorm.
    /// Only queues work: the losses follow into a pinned slot (trainingLosses() sums them later),
    /// and while the GPU runs all this the host builds the encoder backward's bucket table.
    public func trainingForward(inputs: [Int32], targets: [Int32], B: Int, T: Int, microSteps: Int) throws {
        try forwardLayers(inputs: inputs, targets: targets, B: B, T: T)
        let N = B * T
        try classifierBackwardPass(N: N, microSteps: microSteps, computeLogits: true, losses: true)
        classifierState = .backwardDone(microSteps: microSteps)
        try microStepLosses.queue(losses, rows: N, microSteps: microSteps)
        lastForwardWasTraining = true
        try queueEncoderBuckets()
    }

    /// The classifier part of backward(microSteps:): nothing left to do after trainingForward (same
    /// microSteps), else from the kept logits (one chunk) or recomputing each chunk's logits.
    func classifierBackwardOfLastForward(microSteps: Int) throws {
        let N = lastB * lastT
        switch classifierState {
        case .backwardDone(let done):
            if done != microSteps {
                throw LLMError("cuda model: backward(microSteps: \(microSteps)) after trainingForward(microSteps: \(done)): "
                               + "the classifier gradient was already scaled for \(done) micro-steps")
            }
        case .allLogits:
            try classifierBackwardPass(N: N, microSteps: microSteps, computeLogits: false, losses: false)
        case .lastChunk:  // the slow path: each chunk's logits again (lse and losses are kept for all rows)
            try classifierBackwardPass(N: N, microSteps: microSteps, computeLogits: true, losses: false)
        case .empty:
            throw LLMError("cuda model: backward needs a new forward with targets (the last one's gradients were taken)")
        }
        classifierState = .empty
    }

    // MARK: - Chunks

    /// Threads per row of the loss kernels: a whole block on one ~100 KB row of GPT-2's vocabulary
    /// (256 or 512 threads, more rows per SM, were 8 ms per step slower on the H100).
    func classifierThreads(_ V: Int) -> Int { V >= 4096 ? 1024 : 128 }
    /// Static shared memory of the loss kernels (their reduction scratch), with some slack.
    static let classifierStaticShared = 256

    /// The chunks of N rows: classifierRows each, the last one possibly shorter.
    func classifierChunks(_ N: Int) -> [ClassifierChunk] {
        stride(from: 0, to: N, by: classifierRows).map { ClassifierChunk(row: $0, rows: min(classifierRows, N - $0)) }
    }

    /// logits (rows, Vp) = lnf[rows] (rows, C) . wte (Vp, C)^T; with `losses`, also losses[rows] and
    /// logitsLse[rows] (fp32) against targets[rows].
    func classifierForward(_ chunk: ClassifierChunk, losses withLosses: Bool) throws {
        let C = config.channels, V = config.vocabSize, Vp = config.paddedVocabSize
        let r0 = chunk.row
        try matmulForward(logitsBuffer, elements(lnf, r0 * C), tensor(params, .wte), nil, N: chunk.rows, K: C, OC: Vp)
        if !withLosses { return }
        try launch("classifier_loss", grid: (chunk.rows, 1, 1), block: (classifierThreads(V), 1, 1),
                   [.ptr(floats(losses, r0)), .ptr(floats(logitsLse, r0)), .ptr(logitsBuffer),
                    .ptr(targetsBuffer + UInt64(4 * r0)), .i32(Int32(V)), .i32(Int32(Vp))])
    }

    /// For each chunk of N rows (after its logits again when `computeLogits`, and its losses when
    /// `losses`): dlogits = (softmax - onehot) / (N * microSteps) in place, then the LM head's
    /// backward (no bias): dlnf[rows] (rows, C) = dlogits . wte into scratchBTC, and dwte (Vp, C) +=
    /// dlogits^T . lnf[rows]. With one chunk, or in fp32, dwte accumulates straight into the gradient
    /// (one rounding, as a single matmul); several chunks in bf16 sum it in fp32 in dwteSum, added to
    /// the gradient once at the end, so it is still rounded once. Should cuBLASLt refuse the fp32
    /// output (`dwteInFP32` off, one line on stderr), every chunk rounds into the gradient instead.
    func classifierBackwardPass(N: Int, microSteps: Int, computeLogits: Bool, losses withLosses: Bool) throws {
        let C = config.channels, V = config.vocabSize, Vp = config.paddedVocabSize
        let dloss = 1.0 / Float(N * max(microSteps, 1))
        let chunks = classifierChunks(N)
        var viaSum = precision == .bf16 && chunks.count > 1 && dwteInFP32
        var summed = false  // dwteSum holds products not yet in the gradient
        for chunk in chunks {
            let r0 = chunk.row, rows = chunk.rows
            let block = (classifierThreads(V), 1, 1)
            if computeLogits && withLosses {  // losses and dlogits in one pass over the chunk's logits
                try classifierForward(chunk, losses: false)
                let staged = stagedClassifier
                try launch(staged ? "classifier_loss_backward_staged" : "classifier_loss_backward", grid: (rows, 1, 1),
                           block: block, shared: staged ? Vp * E : 0,
                           [.ptr(logitsBuffer), .ptr(floats(losses, r0)), .ptr(floats(logitsLse, r0)),
                            .ptr(targetsBuffer + UInt64(4 * r0)), .f32(dloss), .i32(Int32(V)), .i32(Int32(Vp))])
            } else {
                if computeLogits { try classifierForward(chunk, losses: withLosses) }
                try launch("classifier_backward", grid: (rows, 1, 1), block: block,
                           [.ptr(logitsBuffer), .ptr(floats(logitsLse, r0)), .ptr(targetsBuffer + UInt64(4 * r0)),
                            .f32(dloss), .i32(Int32(V)), .i32(Int32(Vp))])
            }
            // dwte (column-major C x Vp) (+)= lnf[rows] (C x rows) . dlogits^T (rows x Vp): into the
            // fp32 sum (overwritten by the first chunk), or accumulated into the gradient.
            var dwteShape = MatmulShape(m: C, n: Vp, k: rows, transA: false, transB: true, bias: false, accumulate: true)
            if viaSum {
                dwteShape.accumulate = summed
                dwteShape.fp32Output = true
                do {
                    try matmul.run(dwteShape, d: dwteSum, a: elements(lnf, r0 * C), b: logitsBuffer)
                    summed = true
                } catch let e as LLMError {
                    dwteInFP32 = false
                    viaSum = false
                    dwteShape.accumulate = true
                    dwteShape.fp32Output = false
                    fputs("cuda model: LM-head dwte summed in bf16 (\(e.message))\n", stderr)
                }
            }
            if !viaSum { try matmul.run(dwteShape, d: tensor(grads, .wte), a: elements(lnf, r0 * C), b: logitsBuffer) }
            // dlnf[rows] (column-major C x rows) = wte (C x Vp) . dlogits (Vp x rows)
            try matmul.run(MatmulShape(m: C, n: rows, k: Vp, transA: false, transB: false, bias: false, accumulate: false),
                           d: elements(scratchBTC, r0 * C), a: tensor(params, .wte), b: logitsBuffer)
        }
        if summed {
            let n = Vp * C
            try launch1D("add_fp32_gradient", count: n / pack, [.ptr(tensor(grads, .wte)), .ptr(dwteSum), .i64(Int64(n))])
        }
    }
}
