"""minio-setup's stand-in: the bucket on the S3 endpoint (moto's server), with MinIO's
administrator credentials. moto keeps no users or policies: the gateway's and the workers'
keys are accepted as they are, and the workers' policy is not enforced."""

import os

import boto3  # type: ignore[import-untyped]

s3 = boto3.client(
    "s3",
    endpoint_url=os.environ.get("S3_ENDPOINT", "http://minio:9000"),
    aws_access_key_id=os.environ["MINIO_ROOT_USER"],
    aws_secret_access_key=os.environ["MINIO_ROOT_PASSWORD"],
    region_name="us-east-1",
)
bucket = os.environ["MINIO_BUCKET"]
if bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
    s3.create_bucket(Bucket=bucket)
print(f"bucket {bucket} ready (moto: users and policies are not enforced)")
