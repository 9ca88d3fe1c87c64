import XCTest
@testable import AutoencoderCore

final class DenseTests: XCTestCase {
    func testDenseGradientsEveryActivation() {
        for act in Activation.allCases {
            // Inputs away from the ReLU kink are not guaranteed; a small h keeps kinks rare.
            checkLayerGradients(Dense(7, 5, activation: act), batch: 4, seed: 11, h: 1e-3,
                                rtol: 3e-2, atol: 2e-3)
        }
    }

    func testDenseForwardMatchesNaive() {
        let layer = Dense(3, 2, activation: .identity)
        let p = FloatBuffer(8), g = FloatBuffer(8)
        layer.bind(parameters: p.pointer, gradients: g.pointer)
        // W = [[1,2,3],[4,5,6]], b = [0.5, -1]
        for (i, v) in [1, 2, 3, 4, 5, 6, 0.5, -1].enumerated() { p[i] = Float(v) }
        let x = FloatBuffer(3), y = FloatBuffer(2)
        x[0] = 1; x[1] = 0; x[2] = -1
        layer.forward(x.pointer, y.pointer, batch: 1)
        XCTAssertEqual(y[0], 1 - 3 + 0.5, accuracy: 1e-6)
        XCTAssertEqual(y[1], 4 - 6 - 1, accuracy: 1e-6)
    }
}
