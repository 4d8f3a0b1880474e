// main.log in llm.c's format (write, trim on resume, read back), the console line and throughput EMA.

import Foundation
import Testing
@testable import LLM

@Test func mainLogLinesAreLlmcFormat() throws {
    let dir = TestDirectory()
    let log = try TrainingLog(path: dir.file("main.log"))
    log.validation(step: 0, loss: 10.98766)  // 10.98765 would be 10.987649... in Float: "10.9876"
    log.train(step: 0, loss: 10.9876543, learningRate: 6e-4 / 700, gradNorm: 12.345)
    log.evaluation(step: 250, accuracy: 0.2955)
    log.close()
    let text = try String(contentsOfFile: dir.file("main.log"), encoding: .utf8)
    #expect(text == "s:0 tel:10.9877\ns:0 trl:10.9877 lr:0.000001 norm:12.35\ns:250 eval:0.2955\n")
}

@Test func mainLogIsTruncatedForANewRunAndTrimmedOnResume() throws {
    let dir = TestDirectory()
    let path = dir.file("main.log")
    var log = try TrainingLog(path: path)
    for s in 0 ..< 6 { log.train(step: s, loss: Float(10 - s), learningRate: 1e-3, gradNorm: 1) }
    log.validation(step: 0, loss: 11)
    log.validation(step: 4, loss: 7)
    log.close()

    // Resume at step 3: the interrupted run's lines for steps 3, 4, 5 go; new ones are appended.
    log = try TrainingLog(path: path, resumingAt: 3)
    log.train(step: 3, loss: 6.5, learningRate: 1e-3, gradNorm: 1)
    log.close()
    var records = try TrainingLog.read(path)
    #expect(records.train.map(\.step) == [0, 1, 2, 3])
    #expect(records.train.map(\.loss) == [10, 9, 8, 6.5])
    #expect(records.validation.map(\.step) == [0])

    // A new run (no resume) starts the file afresh.
    log = try TrainingLog(path: path)
    log.train(step: 0, loss: 5, learningRate: 1e-3, gradNorm: 1)
    log.close()
    records = try TrainingLog.read(path)
    #expect(records.train.count == 1 && records.validation.isEmpty)
}

@Test func mainLogReaderParsesAndSupersedesRepeatedSteps() throws {
    let dir = TestDirectory()
    let path = dir.file("main.log")
    let text = """
        s:0 tel:11.0123
        s:0 trl:11.0000 lr:0.000001 norm:15.20
        s:1 trl:10.5000 lr:0.000002 norm:9.87
        garbage line
        s:2 trl:10.0000 lr:0.000003 norm:5.00
        s:2 tel:9.9000
        s:1 trl:10.4000 lr:0.000002 norm:9.00
        s:2 eval:0.2600
        s:2 trl:9.9500 lr:0.000003 norm:4.00

        """
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    let r = try TrainingLog.read(path)
    // The second "s:1 trl" (an appended resume) replaced steps >= 1 of the train series.
    #expect(r.train.map(\.step) == [0, 1, 2])
    #expect(r.train.map(\.loss) == [11, 10.4, 9.95])
    #expect(r.learningRate.map(\.value) == [0.000001, 0.000002, 0.000003])
    #expect(r.gradNorm.map(\.value) == [15.2, 9.0, 4.0])
    #expect(r.validation.map(\.step) == [0, 2])
    #expect(r.validation.map(\.loss) == [11.0123, 9.9])
    #expect(r.evaluation.map(\.accuracy) == [0.26])
    #expect(throws: LLMError.self) { _ = try TrainingLog.read(dir.file("missing.log")) }
}

@Test func consoleLineMatchesLlmcFormat() {
    let gpu = consoleLine(step: 7, totalSteps: 5000, loss: 7.123456, lossZ: 0.5, gradNorm: 1.23456,
                          gradNormZ: -1.234, learningRate: 6e-4, milliseconds: 123.456, mfuPercent: 41.27,
                          tokensPerSecond: 4245123.4, etaSeconds: 3725)
    #expect(gpu == "step    7/5000 | loss 7.123456 (+0.50z)| norm 1.2346 (-1.23z)| lr 6.00e-04 | 123.46 ms | "
                 + "41.3% bf16 MFU | 4245123 tok/s | ETA 1h02m")
    // CPU: no MFU; NaN z-scores (detector window still filling) print as C prints them.
    let cpu = consoleLine(step: 1, totalSteps: 20, loss: 10.5, lossZ: .nan, gradNorm: 3, gradNormZ: .nan,
                          learningRate: 3e-4, milliseconds: 2500, mfuPercent: nil, tokensPerSecond: 1638.4)
    #expect(cpu == "step    1/20 | loss 10.500000 (+nanz)| norm 3.0000 (+nanz)| lr 3.00e-04 | 2500.00 ms | 1638 tok/s")
}

@Test func throughputMeterIsBiasCorrectedEMA() {
    var meter = ThroughputMeter(totalSteps: 10)
    meter.record(step: 0, seconds: 10, tokens: 1000)        // warm-up: shown raw, not averaged
    #expect(meter.tokensPerSecond == 100)
    meter.record(step: 1, seconds: 1, tokens: 1000)         // ema = 0.05 * 1000; / (1 - 0.95) = 1000
    #expect(abs(meter.tokensPerSecond - 1000) < 1e-3)
    meter.record(step: 2, seconds: 0.5, tokens: 1000)       // ema = 0.95*50 + 0.05*2000 = 147.5; / 0.0975
    #expect(abs(meter.tokensPerSecond - 147.5 / 0.0975) < 1e-2)
    #expect(meter.averageSeconds == 0.75)
    #expect(meter.etaSeconds(afterStep: 2) == 7 * 0.75)
}

@Test func mfuAndProgress() {
    // GPT-2 124M at T = 1024: 6 N + 6 L C T = 6 * 124,475,904 + 6 * 12 * 768 * 1024 = 803,478,528 FLOPs
    // per token; at 1,000,000 tok/s on a 989 TFLOPS peak that is 81.24%.
    let d12 = GPT2Config(maxSeqLen: 1024, vocabSize: 50257, paddedVocabSize: 50304, numLayers: 12, numHeads: 12,
                         channels: 768)
    let mfu = mfuPercent(config: d12, sequenceLength: 1024, tokensPerSecond: 1e6, peakFlops: 989e12)
    #expect(abs(mfu - 803_478_528.0 * 1e6 / 989e12 * 100) < 1e-9)
    #expect(format("%.1f", mfu) == "81.2")
    #expect(progressLine(label: "hellaswag", done: 500, total: 10000, elapsedSeconds: 12)
            == "hellaswag 500/10000 (5.0%) | 12s | ETA 3m48s")
    #expect(progressLine(label: "x", done: 0, total: 10, elapsedSeconds: 0) == "x 0/10 (0.0%) | 0s")
}
