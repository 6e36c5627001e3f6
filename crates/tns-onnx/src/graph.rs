//! A small builder over the generated protobuf messages: named constants, nodes with
//! attributes, typed graph inputs and outputs. It writes nothing by hand at the byte level;
//! `prost` encodes the messages.

use crate::proto::{
    AttributeProto, GraphProto, NodeProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
    attribute_proto::AttributeType,
    tensor_proto::DataType,
    tensor_shape_proto::{Dimension, dimension},
    type_proto,
};

/// One dimension of a graph input or output.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// The dynamic batch dimension.
    Batch,
}

/// Nodes and initializers of a graph under construction.
#[derive(Debug, Default)]
pub(crate) struct GraphBuilder {
    pub(crate) nodes: Vec<NodeProto>,
    pub(crate) initializers: Vec<TensorProto>,
    next_id: usize,
}

/// An attribute value.
pub(crate) enum Attr<'a> {
    Int(&'a str, i64),
    Ints(&'a str, Vec<i64>),
    /// A subgraph (a `Scan`'s body).
    Graph(&'a str, Box<GraphProto>),
}

fn dims(shape: &[usize]) -> Vec<i64> {
    shape.iter().map(|&d| d as i64).collect()
}

impl GraphBuilder {
    /// A float constant with a readable name.
    pub(crate) fn constant(&mut self, name: &str, shape: &[usize], data: Vec<f32>) -> String {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len(), "{name}");
        self.initializers.push(TensorProto {
            name: Some(name.to_string()),
            dims: dims(shape),
            data_type: Some(DataType::Float as i32),
            float_data: data,
            ..Default::default()
        });
        name.to_string()
    }

    /// An int64 constant (shapes, axes).
    pub(crate) fn constant_i64(&mut self, name: &str, data: Vec<i64>) -> String {
        let shape = [data.len()];
        self.constant_i64_shaped(name, &shape, data)
    }

    /// An int64 constant of the given shape (gather indices).
    pub(crate) fn constant_i64_shaped(
        &mut self,
        name: &str,
        shape: &[usize],
        data: Vec<i64>,
    ) -> String {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len(), "{name}");
        self.initializers.push(TensorProto {
            name: Some(name.to_string()),
            dims: dims(shape),
            data_type: Some(DataType::Int64 as i32),
            int64_data: data,
            ..Default::default()
        });
        name.to_string()
    }

    /// Adds a node with explicit output names.
    pub(crate) fn node_with_outputs(
        &mut self,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attributes: Vec<Attr>,
    ) {
        self.next_id += 1;
        self.nodes.push(NodeProto {
            name: Some(format!("{op}_{}", self.next_id)),
            op_type: Some(op.to_string()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attributes.into_iter().map(attribute).collect(),
            ..Default::default()
        });
    }

    /// Adds a single-output node and returns its output, named `output`.
    pub(crate) fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        output: &str,
        attributes: Vec<Attr>,
    ) -> String {
        self.node_with_outputs(op, inputs, &[output], attributes);
        output.to_string()
    }
}

fn attribute(a: Attr) -> AttributeProto {
    match a {
        Attr::Int(name, v) => AttributeProto {
            name: Some(name.to_string()),
            r#type: Some(AttributeType::Int as i32),
            i: Some(v),
            ..Default::default()
        },
        Attr::Ints(name, v) => AttributeProto {
            name: Some(name.to_string()),
            r#type: Some(AttributeType::Ints as i32),
            ints: v,
            ..Default::default()
        },
        Attr::Graph(name, g) => AttributeProto {
            name: Some(name.to_string()),
            r#type: Some(AttributeType::Graph as i32),
            g: Some(*g),
            ..Default::default()
        },
    }
}

/// A typed graph input or output.
pub(crate) fn value_info(name: &str, elem: DataType, shape: &[Dim], doc: &str) -> ValueInfoProto {
    let dim = shape
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(n) => dimension::Value::DimValue(*n as i64),
                Dim::Batch => dimension::Value::DimParam("batch".to_string()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.to_string()),
        doc_string: Some(doc.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}
