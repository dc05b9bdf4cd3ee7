"""ARKit's 52 blendshape names, as Apple's ARFaceAnchor.BlendShapeLocation lists them: what the tests expect."""

ARKIT = {f"{name}{side}" for name in ("eyeBlink", "eyeLookDown", "eyeLookIn", "eyeLookOut", "eyeLookUp", "eyeSquint",
                                     "eyeWide", "mouthSmile", "mouthFrown", "mouthDimple", "mouthStretch",
                                     "mouthPress", "mouthLowerDown", "mouthUpperUp", "browDown", "browOuterUp",
                                     "cheekSquint", "noseSneer") for side in ("Left", "Right")} | {
    "jawForward", "jawLeft", "jawRight", "jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthLeft",
    "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "browInnerUp",
    "cheekPuff", "tongueOut"}
