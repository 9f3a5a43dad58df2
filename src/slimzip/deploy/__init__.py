"""Deployment: a .slz file's model as code that runs without slimzip (C99 with the compressed weights kept,
and int8 ONNX). ``stored`` reads the tensors as the file keeps them, ``lower`` turns the model's graph into
plain operations, ``cgen`` writes C from them, ``cbuild`` compiles and checks it, ``int8`` quantizes ONNX."""
