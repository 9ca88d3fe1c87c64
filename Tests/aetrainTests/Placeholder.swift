import XCTest
@testable import AutoencoderCore

final class PresetTests: XCTestCase {
    func testPresetLatentSizes() {
        XCTAssertEqual(ModelSpec.preset("mlp3")?.latentSize, 3)
        XCTAssertEqual(ModelSpec.preset("deep32")?.latentSize, 32)
        XCTAssertEqual(ModelSpec.preset("conv")?.latentSize, 7 * 7 * 32)
        XCTAssertEqual(ModelSpec.preset("vae")?.latentSize, 2)
    }
}
