use std::path::Path;

use candle_core::Device;
use tns_certify::{Certificate, GateScratch};
use tns_format::{Forecast, Manifest, Pipeline, load_model};

use crate::{ModelError, Network};

/// A model ready to predict from raw windows: the manifest's pipeline around the network
/// (if the kind has one).
#[derive(Debug, Clone)]
pub struct Forecaster {
    manifest: Manifest,
    pipeline: Pipeline,
    network: Option<Network>,
    device: Device,
}

impl Forecaster {
    /// Combines a manifest and its network.
    pub fn new(
        manifest: Manifest,
        network: Option<Network>,
        device: Device,
    ) -> Result<Self, ModelError> {
        let pipeline = Pipeline::new(&manifest).map_err(ModelError::Config)?;
        if network.is_some() != manifest.config.network.is_some() {
            return Err(ModelError::Config(
                "network presence does not match the config".into(),
            ));
        }
        Ok(Self {
            manifest,
            pipeline,
            network,
            device,
        })
    }

    /// Loads and verifies a model file.
    pub fn load(path: &Path, device: &Device) -> Result<Self, ModelError> {
        let (manifest, tensors) = load_model(path)?;
        let network = manifest
            .config
            .network
            .as_ref()
            .map(|_| Network::from_tensors(&manifest.config, &tensors, device))
            .transpose()?;
        Self::new(manifest, network, device.clone())
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The pipeline.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Predicts `n` raw windows (`[n, L, F]` flat, f64). Every window is checked first.
    pub fn predict(&self, windows: &[f64]) -> Result<Vec<Forecast>, ModelError> {
        let per = self.pipeline.window_len();
        if per == 0 || windows.len() % per != 0 {
            return Err(tns_format::InputError::Shape {
                found: windows.len(),
                lookback: self.manifest.config.lookback,
                features: self.manifest.config.features.len(),
            }
            .into());
        }
        let n = windows.len() / per;
        for w in windows.chunks_exact(per) {
            self.pipeline.check_window(w)?;
        }
        let outputs = match &self.network {
            Some(net) => {
                let mut normalized = vec![0f32; windows.len()];
                for (w, o) in windows
                    .chunks_exact(per)
                    .zip(normalized.chunks_exact_mut(per))
                {
                    self.pipeline.normalize_into(w, o);
                }
                Some(net.forward_flat(&normalized, n, &self.device)?)
            }
            None => None,
        };
        let out_len = self.pipeline.output_len();
        let mut scratch = GateScratch::new(self.manifest.config.targets.len());
        windows
            .chunks_exact(per)
            .enumerate()
            .map(|(i, w)| {
                let mut forecast = self.pipeline.empty_forecast();
                self.pipeline.base_into(w, &mut forecast);
                let net = outputs.as_ref().map(|o| &o[i * out_len..(i + 1) * out_len]);
                self.pipeline
                    .finish_into(net, &mut forecast, &mut scratch)?;
                Ok(forecast)
            })
            .collect()
    }

    /// Predicts one window and returns its certificate.
    pub fn certify(&self, window: &[f64]) -> Result<Certificate, ModelError> {
        let forecast = self.predict(window)?.remove(0);
        Ok(self.pipeline.certificate(&forecast))
    }
}
