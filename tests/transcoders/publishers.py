"""Write transcoders with their publishers' own code (run with the Python of an environment that
has them: ``python publishers.py circuit-tracer OUT`` or ``… sae-lens OUT``).

For each transcoder it writes the publisher's files, exactly as the publisher saves them, and
``<name>.expect.npz``: random inputs ``x`` and the publisher's own ``acts`` (encode) and ``out``
(decode of those activations, skip term included) on them.  ``test_conformance.py`` loads the
files with attribution_nb and compares.  Nothing here imports attribution_nb.
"""

import os
import sys

import numpy as np
import torch

D, F, N = 16, 48, 32


def _randomise(module, scale=0.3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=gen))


def _expect(path, x, acts, out):
    np.savez(path, x=x.detach().numpy(), acts=acts.detach().numpy(), out=out.detach().numpy())


def circuit_tracer(out_dir):
    from circuit_tracer.transcoder.activation_functions import JumpReLU
    from circuit_tracer.transcoder.cross_layer_transcoder import CrossLayerTranscoder
    from circuit_tracer.transcoder.single_layer_transcoder import SingleLayerTranscoder

    x = torch.randn(N, D, generator=torch.Generator().manual_seed(1))
    for name, skip, jump in (("ct_jumprelu_skip", True, True), ("ct_relu", False, False)):
        act = JumpReLU(torch.zeros(F), 0.1) if jump else torch.nn.ReLU()
        tc = SingleLayerTranscoder(
            D,
            F,
            act,
            layer_idx=0,
            skip_connection=skip,
            device=torch.device("cpu"),
            dtype=torch.float32,
        )
        _randomise(tc)
        if jump:
            with torch.no_grad():
                tc.activation_function.threshold.copy_(
                    0.2 + 0.3 * torch.rand(F, generator=torch.Generator().manual_seed(2))
                )
        tc.to_safetensors(os.path.join(out_dir, f"{name}.safetensors"))
        with torch.no_grad():
            acts = tc.encode(x)
            _expect(os.path.join(out_dir, f"{name}.expect.npz"), x, acts, tc.decode(acts, x))
    # a cross-layer transcoder: every layer's features write to it and every later layer
    L = 3
    clt = CrossLayerTranscoder(
        L,
        F,
        D,
        activation_function="jump_relu",
        lazy_decoder=False,
        device=torch.device("cpu"),
        dtype=torch.float32,
    )
    _randomise(clt)
    with torch.no_grad():
        clt.activation_function.threshold.copy_(
            0.2 + 0.3 * torch.rand(L, 1, F, generator=torch.Generator().manual_seed(3))
        )
    clt.to_safetensors(os.path.join(out_dir, "ct_clt"))
    xs = torch.randn(L, N, D, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        acts = clt.encode(xs)
        _expect(os.path.join(out_dir, "ct_clt.expect.npz"), xs, acts, clt.decode(acts.to_sparse()))


def sae_lens(out_dir):
    from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig
    from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig
    from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig
    from sae_lens.saes.transcoder import (
        JumpReLUSkipTranscoder,
        JumpReLUSkipTranscoderConfig,
        JumpReLUTranscoder,
        JumpReLUTranscoderConfig,
        SkipTranscoder,
        SkipTranscoderConfig,
        Transcoder,
        TranscoderConfig,
    )

    x = torch.randn(N, D, generator=torch.Generator().manual_seed(1))
    dims = dict(d_in=D, d_sae=F, dtype="float32", device="cpu")
    tc_dims = dict(
        d_out=D, apply_b_dec_to_input=False, **dims
    )  # (sae-lens refuses the input centring here)
    made = {
        "sl_standard": StandardSAE(StandardSAEConfig(apply_b_dec_to_input=True, **dims)),
        "sl_topk": TopKSAE(TopKSAEConfig(k=5, **dims)),
        "sl_jumprelu": JumpReLUSAE(JumpReLUSAEConfig(**dims)),
        "sl_transcoder": Transcoder(TranscoderConfig(**tc_dims)),
        "sl_skip_transcoder": SkipTranscoder(SkipTranscoderConfig(**tc_dims)),
        "sl_jumprelu_transcoder": JumpReLUTranscoder(JumpReLUTranscoderConfig(**tc_dims)),
        "sl_jumprelu_skip_transcoder": JumpReLUSkipTranscoder(
            JumpReLUSkipTranscoderConfig(**tc_dims)
        ),
    }
    for i, (name, sae) in enumerate(made.items()):
        _randomise(sae, seed=i)
        if hasattr(sae, "threshold"):
            with torch.no_grad():
                sae.threshold.copy_(
                    0.2 + 0.3 * torch.rand(F, generator=torch.Generator().manual_seed(10 + i))
                )
        sae.eval()
        sae.save_model(os.path.join(out_dir, name))
        with torch.no_grad():
            _expect(os.path.join(out_dir, f"{name}.expect.npz"), x, sae.encode(x), sae(x))


if __name__ == "__main__":
    which, out_dir = sys.argv[1], sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    {"circuit-tracer": circuit_tracer, "sae-lens": sae_lens}[which](out_dir)
    print("wrote", sorted(os.listdir(out_dir)))
