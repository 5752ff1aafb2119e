//! Command-line spellings of the library's enums. The library stays free of clap (a server or
//! a notebook binding can use it without the CLI's types); each parser lists the accepted
//! names in `--help` and in errors, and maps them to the library's value.
use artculture::model::Arch;
use artculture::model::autocast::Precision;
use artculture::model::device::DeviceKind;
use artculture::predict::CamKind;
use artculture::train::Method;
use clap::builder::{PossibleValuesParser, TypedValueParser};

/// A parser accepting exactly `values`' names.
fn one_of<T: Copy + Send + Sync + 'static>(values: &'static [(&'static str, T)]) -> impl TypedValueParser<Value = T> {
    PossibleValuesParser::new(values.iter().map(|(name, _)| *name))
        .map(move |s| values.iter().find(|(name, _)| *name == s).map(|(_, v)| *v).expect("clap checked the name"))
}

pub fn arch() -> impl TypedValueParser<Value = Arch> {
    one_of(&[
        ("resnet50", Arch::Resnet50),
        ("vgg16_bn", Arch::Vgg16Bn),
        ("alexnet", Arch::Alexnet),
        ("clip_vit_b32", Arch::ClipVitB32),
        ("clip-vit-b32", Arch::ClipVitB32),
    ])
}

/// What `weights fetch` fetches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fetchable {
    Arch(Arch),
    Clip,
}

pub fn fetchable() -> impl TypedValueParser<Value = Fetchable> {
    one_of(&[
        ("resnet50", Fetchable::Arch(Arch::Resnet50)),
        ("vgg16_bn", Fetchable::Arch(Arch::Vgg16Bn)),
        ("alexnet", Fetchable::Arch(Arch::Alexnet)),
        ("clip", Fetchable::Clip),
    ])
}

pub fn device() -> impl TypedValueParser<Value = DeviceKind> {
    one_of(&[("cpu", DeviceKind::Cpu), ("cuda", DeviceKind::Cuda), ("metal", DeviceKind::Metal)])
}

pub fn precision() -> impl TypedValueParser<Value = Precision> {
    one_of(&[("f32", Precision::F32), ("bf16", Precision::Bf16)])
}

pub fn method() -> impl TypedValueParser<Value = Method> {
    one_of(&[("finetune", Method::FineTune), ("transfer", Method::Transfer), ("scratch", Method::Scratch)])
}

pub fn cam() -> impl TypedValueParser<Value = CamKind> {
    one_of(&[("sum", CamKind::Sum), ("gradcam", CamKind::Gradcam)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_library_value_has_its_own_spelling() {
        let cmd = clap::Command::new("t");
        let parse = |p: &dyn Fn(&str) -> bool, s: &str| p(s);
        let arch_ok = |s: &str| arch().parse_ref(&cmd, None, std::ffi::OsStr::new(s)).is_ok();
        for a in Arch::ALL {
            assert_eq!(arch().parse_ref(&cmd, None, std::ffi::OsStr::new(a.as_str())).unwrap(), a);
        }
        assert!(!parse(&arch_ok, "resnet-50"));
        for m in [Method::FineTune, Method::Transfer, Method::Scratch] {
            assert_eq!(method().parse_ref(&cmd, None, std::ffi::OsStr::new(m.as_str())).unwrap(), m);
        }
        for d in [DeviceKind::Cpu, DeviceKind::Cuda, DeviceKind::Metal] {
            assert_eq!(device().parse_ref(&cmd, None, std::ffi::OsStr::new(d.as_str())).unwrap(), d);
        }
    }
}
