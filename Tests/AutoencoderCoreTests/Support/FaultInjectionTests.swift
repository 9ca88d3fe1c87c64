import XCTest
@testable import AutoencoderCore

/// The test hooks are read from the environment in one place, with the formats the tests and the
/// cluster scripts use; anything else leaves a hook off.
final class FaultInjectionTests: XCTestCase {
    func testHooksParseFromTheEnvironment() {
        let f = FaultInjection(environment: ["AETRAIN_TEST_NAN_GRAD": "1:3", "AETRAIN_TEST_PERTURB": "0:12",
                                             "AETRAIN_TEST_CRASH_AFTER_TEMP": "/tmp/x/checkpoints/"])
        XCTAssertEqual(f.nanGradient, .init(rank: 1, step: 3))
        XCTAssertEqual(f.perturbParameters, .init(rank: 0, step: 12))
        XCTAssertEqual(f.crashAfterTemp, "/tmp/x/checkpoints/")
        XCTAssertNil(f.ranksPerNode)
        XCTAssertEqual(FaultInjection(environment: ["AETRAIN_TEST_RANKS_PER_NODE": "2"]).ranksPerNode, 2)
        for bad in ["", "0", "-1", "x", "2.5"] {
            XCTAssertNil(FaultInjection(environment: ["AETRAIN_TEST_RANKS_PER_NODE": bad]).ranksPerNode, bad)
        }
    }

    func testNoHooksWithoutTheVariablesOrWithMalformedValues() {
        let none = FaultInjection(environment: ["PATH": "/usr/bin"])
        XCTAssertNil(none.nanGradient)
        XCTAssertNil(none.perturbParameters)
        XCTAssertNil(none.crashAfterTemp)
        for bad in ["", "3", "1:", ":3", "a:b", "1:2:3", "1;3"] {
            XCTAssertNil(FaultInjection(environment: ["AETRAIN_TEST_NAN_GRAD": bad]).nanGradient, bad)
        }
    }
}
