//! Detector workers (spend spikes, leaked keys, retry storms, cross-region access): see issue 3.
