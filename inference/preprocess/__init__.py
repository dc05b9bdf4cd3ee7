"""Layer 3, preprocessing: a photo file -> upright pixels, faces with 68 landmarks, and the crop camera.

    decode   the file -> upright RGB pixels (EXIF orientation, HEIC/AVIF, huge photos reduced at an exact scale)
    detect   faces and 68 landmarks with dlib (retried on upscaled and rotated copies when none is found)
    align    head pose from the landmarks, the photo <-> crop similarity, the photo camera
    identity dlib's face descriptor of a face in an image (is it the same person?)

The frame change between photo pixels and the aligned crop happens here and nowhere else.
"""
