"""TorchServe handler for the peers' best CPU setting: TorchServe's own ``image_classifier`` (its preprocessing,
batching and top-5 output) with the forward pass run in ``PEER_MODE`` (``bench.peers.torch_model``)."""

from ts.torch_handler.image_classifier import ImageClassifier

from bench.peers import torch_model


class TunedImageClassifier(ImageClassifier):
    def initialize(self, context):
        super().initialize(context)
        self.forward = torch_model.prepare(self.model, torch_model.mode_from_env())

    def inference(self, data, *args, **kwargs):
        return self.forward(data.to(self.device))
