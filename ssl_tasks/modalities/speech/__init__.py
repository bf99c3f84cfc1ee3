"""The speech modality: mono waveforms (FSDD-style spoken digits), a wav2vec 2.0-style encoder, wav2vec 2.0 and
HuBERT pretraining, utterance-level probes with speakers held out."""
