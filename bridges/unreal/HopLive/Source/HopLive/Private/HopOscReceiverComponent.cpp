#include "HopOscReceiverComponent.h"

#include "Common/UdpSocketBuilder.h"
#include "Common/UdpSocketReceiver.h"
#include "Components/PoseableMeshComponent.h"
#include "GameFramework/Actor.h"
#include "Interfaces/IPv4/IPv4Endpoint.h"
#include "Misc/ScopeLock.h"
#include "SocketSubsystem.h"
#include "Sockets.h"

// Index of each driven bone's source bone in /hop/dirvec, per skeleton (bone order of hop.model.skeleton),
// in the order of the drives built in BeginPlay: spine, neck, head, clavicle/upper/lower arm left, then right.
static const int32 TedGestureSources[9] = {0, 1, 2, 3, 4, 5, 6, 7, 8};
static const int32 TedExpressiveSources[9] = {0, 7, 8, 1, 3, 4, 2, 5, 6};

// The stream's directions are in TED axes (x = subject's right, y = down, z = forward, right-handed).
// Actor space in Unreal: X forward, Y right, Z up, left-handed; the mapping (x, y, z) -> (z, x, -y)
// changes the handedness too. Units do not matter for directions.
static FVector TedToActor(const float* V) { return FVector(V[2], V[0], -V[1]); }

UHopOscReceiverComponent::UHopOscReceiverComponent()
{
	PrimaryComponentTick.bCanEverTick = true;
	PrimaryComponentTick.TickGroup = TG_PostUpdateWork;  // after animation, so the pose wins
}

void UHopOscReceiverComponent::BeginPlay()
{
	Super::BeginPlay();
	if (Mesh == nullptr && GetOwner() != nullptr) Mesh = GetOwner()->FindComponentByClass<UPoseableMeshComponent>();
	if (Mesh == nullptr)
	{
		UE_LOG(LogTemp, Error, TEXT("HopOscReceiver: no PoseableMeshComponent to drive"));
		return;
	}

	// Parents before children. Neck and head directions (neck->nose, nose->head top) do not run along a bone,
	// so their rest directions are fixed actor-space vectors, as in profiles/rigs/ue5_mannequin.toml.
	Drives = {
		{Spine, Neck, FVector::ZeroVector, INDEX_NONE},
		{Neck, NAME_None, FVector(7.0, 0.0, 14.0), 0},
		{Head, NAME_None, FVector(-5.6, 0.0, 12.0), 1},
		{ClavicleL, UpperArmL, FVector::ZeroVector, 0},
		{UpperArmL, LowerArmL, FVector::ZeroVector, 3},
		{LowerArmL, HandL, FVector::ZeroVector, 4},
		{ClavicleR, UpperArmR, FVector::ZeroVector, 0},
		{UpperArmR, LowerArmR, FVector::ZeroVector, 6},
		{LowerArmR, HandR, FVector::ZeroVector, 7},
	};
	const FTransform Actor = GetOwner()->GetActorTransform();
	for (FDrive& D : Drives)
	{
		const FTransform Bone = Mesh->GetBoneTransformByName(D.Bone, EBoneSpaces::WorldSpace);
		D.RestRotation = Actor.GetRotation().Inverse() * Bone.GetRotation();
		D.RestDirection = D.To.IsNone()
			? D.Fixed.GetSafeNormal()
			: Actor.InverseTransformVectorNoScale(
				  Mesh->GetBoneLocationByName(D.To, EBoneSpaces::WorldSpace) - Bone.GetLocation()).GetSafeNormal();
	}

	Socket = FUdpSocketBuilder(TEXT("hop-live OSC"))
		.AsNonBlocking()
		.AsReusable()
		.BoundToAddress(FIPv4Address::Any)
		.BoundToPort(Port)
		.WithReceiveBufferSize(1 << 20)
		.Build();
	if (Socket == nullptr)
	{
		UE_LOG(LogTemp, Error, TEXT("HopOscReceiver: cannot bind UDP port %d"), Port);
		return;
	}
	Receiver = new FUdpSocketReceiver(Socket, FTimespan::FromMilliseconds(100), TEXT("hop-live OSC receiver"));
	Receiver->OnDataReceived().BindUObject(this, &UHopOscReceiverComponent::OnPacket);
	Receiver->Start();
}

void UHopOscReceiverComponent::EndPlay(const EEndPlayReason::Type EndPlayReason)
{
	if (Receiver != nullptr)
	{
		Receiver->Stop();
		delete Receiver;  // joins the receiving thread
		Receiver = nullptr;
	}
	if (Socket != nullptr)
	{
		Socket->Close();
		ISocketSubsystem::Get(PLATFORM_SOCKETSUBSYSTEM)->DestroySocket(Socket);
		Socket = nullptr;
	}
	Super::EndPlay(EndPlayReason);
}

// On the receiver thread: parse, keep only the newest frame of our stream.
void UHopOscReceiverComponent::OnPacket(const FArrayReaderPtr& Data, const FIPv4Endpoint& From)
{
	HopOsc::FFrame Frame;
	const bool bOk = HopOsc::ParseBundle(Data->GetData(), size_t(Data->Num()), Frame);
	FScopeLock Lock(&PendingLock);
	if (!bOk)
	{
		++RejectedOnThread;
		return;
	}
	if (Frame.Stream != Stream) return;
	++ReceivedOnThread;
	Pending = MoveTemp(Frame);
	bHasPending = true;
}

void UHopOscReceiverComponent::TickComponent(float DeltaTime, ELevelTick TickType, FActorComponentTickFunction* ThisTickFunction)
{
	Super::TickComponent(DeltaTime, TickType, ThisTickFunction);
	HopOsc::FFrame Frame;
	{
		FScopeLock Lock(&PendingLock);
		FramesReceived = ReceivedOnThread;
		PacketsRejected = RejectedOnThread;
		if (!bHasPending) return;
		Frame = MoveTemp(Pending);
		bHasPending = false;
	}
	FrameIndex = Frame.Frame;
	bSpeaking = Frame.bSpeaking;
	SkeletonName = UTF8_TO_TCHAR(Frame.Skeleton.c_str());
	DirVec = TArray<float>(Frame.DirVec.data(), int32(Frame.DirVec.size()));
	if (Mesh != nullptr && Drives.Num() > 0) ApplyPose(Frame);
}

// Swing each bone from its rest direction (carried along by its driven parent) onto the streamed direction.
void UHopOscReceiverComponent::ApplyPose(const HopOsc::FFrame& Frame)
{
	const int32* Sources = Frame.Skeleton == "ted_gesture" ? TedGestureSources
		: Frame.Skeleton == "ted_expressive" ? TedExpressiveSources : nullptr;
	if (Sources == nullptr || Frame.DirVec.size() < 27) return;
	const FQuat ActorRotation = GetOwner()->GetActorQuat();
	const float Follow = 1.f - FMath::Clamp(Smoothing, 0.f, 0.95f);
	for (int32 I = 0; I < Drives.Num(); ++I)
	{
		FDrive& D = Drives[I];
		const FQuat Parent = D.Parent == INDEX_NONE ? FQuat::Identity : Drives[D.Parent].Delta;
		const FVector Target = TedToActor(&Frame.DirVec[3 * Sources[I]]).GetSafeNormal();
		FQuat Wanted = Parent;
		if (!Target.IsNearlyZero())
			Wanted = FQuat::FindBetweenNormals(Parent.RotateVector(D.RestDirection), Target) * Parent;
		D.Delta = FQuat::Slerp(D.Delta, Wanted, Follow).GetNormalized();
		Mesh->SetBoneRotationByName(D.Bone, (ActorRotation * D.Delta * D.RestRotation).Rotator(), EBoneSpaces::WorldSpace);
	}
}
