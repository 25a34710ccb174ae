"""The V1 layer types: `V1LayerParameter.LayerType` enum number and name, and the type
string Caffe's upgrader gives each one.

One table for both readers of V1 nets: the text upgrader looks types up by enum name
(surgery.io.upgrade, surgery.io.prototxt's hint for an unquoted type) and the streaming
caffemodel reader and writer by enum number (surgery.io.caffemodel). It imports nothing,
so the binary reader stays as light as it is.
"""

# (enum number, enum name, current type string): BVLC's values plus two forks' (the same
# numbers as proto/caffe.proto's V1LayerParameter.LayerType).
V1_LAYER_TYPES = (
    (0, "NONE", ""),
    (1, "ACCURACY", "Accuracy"),
    (2, "BNLL", "BNLL"),
    (3, "CONCAT", "Concat"),
    (4, "CONVOLUTION", "Convolution"),
    (5, "DATA", "Data"),
    (6, "DROPOUT", "Dropout"),
    (7, "EUCLIDEAN_LOSS", "EuclideanLoss"),
    (8, "FLATTEN", "Flatten"),
    (9, "HDF5_DATA", "HDF5Data"),
    (10, "HDF5_OUTPUT", "HDF5Output"),
    (11, "IM2COL", "Im2col"),
    (12, "IMAGE_DATA", "ImageData"),
    (13, "INFOGAIN_LOSS", "InfogainLoss"),
    (14, "INNER_PRODUCT", "InnerProduct"),
    (15, "LRN", "LRN"),
    (16, "MULTINOMIAL_LOGISTIC_LOSS", "MultinomialLogisticLoss"),
    (17, "POOLING", "Pooling"),
    (18, "RELU", "ReLU"),
    (19, "SIGMOID", "Sigmoid"),
    (20, "SOFTMAX", "Softmax"),
    (21, "SOFTMAX_LOSS", "SoftmaxWithLoss"),
    (22, "SPLIT", "Split"),
    (23, "TANH", "TanH"),
    (24, "WINDOW_DATA", "WindowData"),
    (25, "ELTWISE", "Eltwise"),
    (26, "POWER", "Power"),
    (27, "SIGMOID_CROSS_ENTROPY_LOSS", "SigmoidCrossEntropyLoss"),
    (28, "HINGE_LOSS", "HingeLoss"),
    (29, "MEMORY_DATA", "MemoryData"),
    (30, "ARGMAX", "ArgMax"),
    (31, "THRESHOLD", "Threshold"),
    (32, "DUMMY_DATA", "DummyData"),
    (33, "SLICE", "Slice"),
    (34, "MVN", "MVN"),
    (35, "ABSVAL", "AbsVal"),
    (36, "SILENCE", "Silence"),
    (37, "CONTRASTIVE_LOSS", "ContrastiveLoss"),
    (38, "EXP", "Exp"),
    (39, "DECONVOLUTION", "Deconvolution"),
    (43, "BN", "BN"),                            # SegNet fork, its own value
    # DeepLab v1 fork: its values are unknown (IMAGE_SEG_DATA was 39, DECONVOLUTION's), so
    # this schema gives the four fresh ones, for text nets
    (1001, "IMAGE_SEG_DATA", "ImageSegData"),
    (1002, "INTERP", "Interp"),
    (1003, "MAT_WRITE", "MatWrite"),
    (1004, "SEG_ACCURACY", "SegAccuracy"),
)

# Enum numbers from here up exist in this project's schema only: a caffemodel never
# carries them, so the binary reader shows such a value as unknown (V1:<n>).
SCHEMA_ONLY = 1000

# enum name -> type string ("SOFTMAX_LOSS" -> "SoftmaxWithLoss")
V1_TYPE_BY_NAME = {name: type_ for _, name, type_ in V1_LAYER_TYPES}
# enum number in a binary file -> type string (4 -> "Convolution")
V1_TYPE_BY_NUMBER = {number: type_ for number, _, type_ in V1_LAYER_TYPES
                     if number < SCHEMA_ONLY}
